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

# 3. few-shot training step on cuda with ResNet-12 (64x64 shapes3d-fs images: 640 x 4 x 4 = 10,240 features;
# MetaOptNet's 16,000 need 84x84 images, e.g. --dataset mini-imagenet --data-root DIR --image-size 84):
# the step's split into data, backbone and head for the group-lasso and SVM heads, bfloat16 autocast on
for head in group-lasso svm; do
  rm -rf "$OUT/train-resnet12-$head"
  "$PYTHON" -m metasparse.cli train --out "$OUT/train-resnet12-$head" --backbone resnet12 --head "$head" \
      --steps 30 --validate-every 30 --val-episodes 16 --device cuda --no-progress
  "$PYTHON" - "$OUT/train-resnet12-$head" <<'PY' | tee "$OUT/train-resnet12-$head.txt"
import json, sys
from metasparse.train import read_metrics
steps = [r for r in read_metrics(sys.argv[1]) if r["split"] == "train"][5:]  # after warm-up
mean = {k: sum(r[f"time_{k}"] for r in steps) / len(steps) for k in ("data", "backbone", "head", "step")}
print(sys.argv[1], {k: f"{1000 * v:.0f} ms" for k, v in mean.items()},
      f"head share {100 * mean['head'] / mean['step']:.0f}%")
PY
done

echo "wrote $OUT/heads.json, $OUT/heads.md, $OUT/test_heads_cuda.txt, $OUT/machine.txt, $OUT/train-resnet12-*.txt"
