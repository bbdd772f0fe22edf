#!/usr/bin/env bash
# The GPU check of issue 19, one command for a lent GPU machine (see docs/operations.md):
#
#   bash bench/gpu/run.sh [--cpu-smoke] [OUT_DIR]
#
# OUT_DIR defaults to $OUT (the device machine's returned folder), else bench/results/gpu (ignored).
# GPU mode: installs the carried wheels from .whl/ (`make gpu-wheels`) into /tmp/site, then runs the
# ALS section (bench/gpu/als_gpu.py) and the BGE-M3 section (bench/gpu/embed_gpu.py), each in its
# own process under a timeout (together < 8 minutes on an H200), then bench/gpu/report.py prints the
# table and writes gpu.json + gpu.txt. --cpu-smoke: tiny sizes on the CPU, no wheel install (the
# test suite runs it so the script cannot rot). Exit status 1 on a failed section or check.
set -uo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
SMOKE=""
DEST=""
for arg in "$@"; do
  case "$arg" in
    --cpu-smoke) SMOKE="--cpu-smoke" ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) DEST="$arg" ;;
  esac
done
DEST="${DEST:-${OUT:-$REPO/bench/results/gpu}}"
mkdir -p "$DEST"
DEST="$(cd "$DEST" && pwd)"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1 OPENBLAS_NUM_THREADS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error \
  HF_HUB_DISABLE_PROGRESS_BARS=1 TOKENIZERS_PARALLELISM=true

if [[ -n "$SMOKE" ]]; then
  echo "cpu-smoke: wheel install skipped; using what $PY can import"
  ALS_LIMIT=300 EMBED_LIMIT=300
else
  ALS_LIMIT=220 EMBED_LIMIT=200
  if compgen -G ".whl/*.whl" >/dev/null; then
    echo "installing the carried wheels: $(cd .whl && ls *.whl | tr '\n' ' ')"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      >"$DEST/install.log" 2>&1 || { cat "$DEST/install.log"; echo "FAIL: the wheel install failed"; exit 1; }
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "no .whl/ wheels here (run 'make gpu-wheels' and carry .whl): implicit GPU and the project's BGE-M3 path will say why they did not run"
  fi
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "nvidia-smi failed"
fi
export PYTHONPATH="$REPO/include${PYTHONPATH:+:$PYTHONPATH}"
echo "python: $($PY -c 'import sys; print(sys.executable, sys.version.split()[0])'); out: $DEST"

rc=0
echo "== ALS section (limit ${ALS_LIMIT}s)"
timeout -k 10 "$ALS_LIMIT" "$PY" bench/gpu/als_gpu.py --out "$DEST" $SMOKE 2>&1 | tee "$DEST/als.log" || {
  echo "ALS section ended with status $?"; rc=1; }
echo "== BGE-M3 section (limit ${EMBED_LIMIT}s)"
timeout -k 10 "$EMBED_LIMIT" "$PY" bench/gpu/embed_gpu.py --out "$DEST" $SMOKE 2>&1 | tee "$DEST/embed.log" || {
  echo "BGE-M3 section ended with status $?"; rc=1; }
echo "== report"
"$PY" bench/gpu/report.py --out "$DEST" || rc=1
exit $rc
