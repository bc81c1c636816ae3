#!/usr/bin/env bash
# One run on a GPU machine: every head on cuda against the CPU, then `bench heads --device cuda` (the full
# grid: 1/5/15 shots, d = 64 to 16000 incl. 15-shot d = 16000 and the lambda1 sweep there, the group-lasso
# head against the SVM head and ridge, MetaOptNet's qpth head where qpth is installed).
#
#     bash benchmarks/gpu.sh [OUT_DIR]      # default benchmarks/results/gpu; about 10-20 minutes
#
# Needs a CUDA build of torch in .venv (or $PYTHON); qpth is optional (pip install --no-deps qpth).
# Writes OUT_DIR/heads.{json,md}, OUT_DIR/test_heads_cuda.txt and OUT_DIR/machine.txt; copy the tables
# into the "## heads" section of docs/benchmarks.md, where the GPU figures are marked "not measured".
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
OUT="${1:-benchmarks/results/gpu}"
mkdir -p "$OUT"

"$PYTHON" - <<'PY' | tee "$OUT/machine.txt"
import platform, torch
assert torch.cuda.is_available(), "no CUDA device visible to torch"
print(f"{platform.machine()}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"{torch.cuda.get_device_name()}, {torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")
PY

# 1. every head on cuda agrees with the CPU (logits and gradients), and the solver tests at full size
"$PYTHON" -m pytest tests/test_heads.py -k gpu -q -rs 2>&1 | tee "$OUT/test_heads_cuda.txt"

# 2. the benchmark on cuda (cvxpylayers is CPU-only and skipped there); its gradient-accuracy part is CPU-only
"$PYTHON" benchmarks/heads.py --device cuda --out "$OUT/heads.json"

echo "wrote $OUT/heads.json, $OUT/heads.md, $OUT/test_heads_cuda.txt, $OUT/machine.txt"
