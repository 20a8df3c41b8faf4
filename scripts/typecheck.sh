#!/usr/bin/env bash
# Type-check the library as installed (one import root, tooliqa.*): the package
# folders map onto tooliqa.graph / tooliqa.tools only once installed, so mypy
# reads a throw-away non-editable install instead of the source tree.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$REPO_ROOT/.venv/bin/python}"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
"$PY" -m pip install --quiet --no-deps --target "$TMP/site" "$REPO_ROOT" 2>/dev/null
cd "$TMP/site"
"$PY" -m mypy --config-file "$REPO_ROOT/pyproject.toml" -p tooliqa
