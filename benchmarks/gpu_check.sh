#!/usr/bin/env bash
# The prepared GPU check: install this project from the wheels in .whl/ (no network), then run the benchmarks and
# the demo DAG stage by stage, and write one Markdown report (benchmarks/gpu_check.py says what runs in each mode).
#
#   bash benchmarks/gpu_check.sh --out /somewhere/gpu_report.md             # about 5 minutes on one H100/H200
#   bash benchmarks/gpu_check.sh --quick --out /somewhere/gpu_report.md     # about 2 minutes
#   bash benchmarks/gpu_check.sh --dry-run --out /tmp/report.md             # CPU, tiny sizes, this checkout's .venv
#   bash benchmarks/gpu_check.sh --parts compile --out ...                  # only some parts (names: --help)
#   bash benchmarks/gpu_check.sh --dry-run --python /other/python3 --wheels /other/wheels --out ...
#
# The box needs Python 3.12 with PyTorch (`python3`, or --python); every other package comes from .whl/ (or
# --wheels), fetched on a machine with network by benchmarks/fetch_gpu_wheels.sh, and installed unless the
# interpreter is this checkout's .venv. The report is written after every part, so it is there even when a part
# fails or the whole check is stopped.
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODE=full
PY=""
WHEELS="$REPO/.whl"
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) MODE=quick ;;
    --dry-run) MODE=dry-run ;;
    --python) PY="$2"; shift ;;
    --wheels) WHEELS="$2"; shift ;;
    *) ARGS+=("$1") ;;
  esac
  shift
done
export GPU_CHECK_STARTED="$(date +%s.%N)"
WORK="$(mktemp -d /tmp/gpu-check.XXXXXX)"
if [ -z "$PY" ] && [ "$MODE" = dry-run ] && [ -x "$REPO/.venv/bin/python" ]; then
  PY="$REPO/.venv/bin/python"
elif [ -z "$PY" ]; then
  PY="$(command -v python3 || command -v python)"
fi
echo "gpu_check: $MODE mode, python $PY, work folder $WORK" >&2
SITE=/tmp/fashion-cir-site
if [ "$PY" != "$REPO/.venv/bin/python" ] && [ -d "$WHEELS" ]; then
  echo "gpu_check: installing the missing packages from $WHEELS into $SITE" >&2
  rm -rf "$SITE"
  # pip installs; this picks the wheels whose distribution the box lacks (its own torch, numpy... stay as they are)
  "$PY" - "$WHEELS" > "$WORK/missing-wheels.txt" 2> "$WORK/kept.txt" <<'PY'
import importlib.metadata, pathlib, sys
for wheel in sorted(pathlib.Path(sys.argv[1]).glob("*.whl")):
    name, version = wheel.name.split("-")[:2]
    try:
        print(f"{name} {importlib.metadata.version(name)} (wheel {version})", file=sys.stderr)
    except importlib.metadata.PackageNotFoundError:
        print(wheel)
PY
  PIP=("$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE")
  mapfile -t MISSING < "$WORK/missing-wheels.txt"
  if [ "${#MISSING[@]}" -gt 0 ]; then
    "${PIP[@]}" --report "$WORK/installed.json" "${MISSING[@]}" \
      || echo '{"error": "pip install failed"}' > "$WORK/installed.json"
  fi
  export PYTHONPATH="$SITE:$REPO${PYTHONPATH:+:$PYTHONPATH}"
  if ! "$PY" -c "import open_clip, faiss, dvc.api, dvclive, pydantic, ruamel.yaml, transformers" \
      2> "$WORK/import-error.txt"; then
    echo "gpu_check: an installed package is too old for the wheels; installing every wheel" >&2
    "${PIP[@]}" --upgrade --report "$WORK/installed-all.json" "$WHEELS"/*.whl || true
  fi
else
  export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
fi
# DVC runs stages as `python -m stages.<name>`: make `python` this interpreter, wherever `python` is missing or other.
mkdir -p "$WORK/bin"
printf '#!/bin/sh\nexec "%s" "$@"\n' "$PY" > "$WORK/bin/python"
chmod +x "$WORK/bin/python"
export PATH="$WORK/bin:$PATH" HF_HUB_OFFLINE=1 DVC_NO_ANALYTICS=1 PYTHONUNBUFFERED=1
exec "$PY" "$REPO/benchmarks/gpu_check.py" --mode "$MODE" --work "$WORK" ${ARGS[@]+"${ARGS[@]}"}
