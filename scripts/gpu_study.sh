#!/usr/bin/env bash
# The device-machine check of issue 3, prepared for a session that is lent a GPU:
# the study's whole protocol (cnn 100 epochs + mobilenet_v2 50 epochs on the grouped 80/20
# split of the shared training images) timed on one GPU, plus the pipeline/synthetic
# throughput ratio. Copy the data and weights into the checkout first (git-ignored .carry/):
#   mkdir -p .carry && cp -r ../shared/datasets/chest_xray .carry/ && cp ../shared/weights/mobilenet_v2_imagenet.pth .carry/
# then run it with carry=[".carry"] and read the figures from $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
# The GPU image has torch, lightning, sklearn, OpenCV, typer and rich; nothing can be fetched there,
# and training needs nothing else (pydicom, grad-cam and FastAPI are imported only when used).
python3 -m pip install --quiet --no-deps --no-build-isolation -e .
export PNEUMO_DATA=.carry/chest_xray PNEUMO_CACHE=/tmp/pneumo-cache PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  start=$(date +%s.%N)
  pneumo train --model cnn --epochs 100 --accelerator gpu --precision bf16-mixed --runs-dir /tmp/runs --name cnn --quiet
  mid=$(date +%s.%N)
  pneumo train --model mobilenet_v2 --pretrained .carry/mobilenet_v2_imagenet.pth --epochs 50 --accelerator gpu \
    --precision bf16-mixed --runs-dir /tmp/runs --name mobilenet --quiet
  end=$(date +%s.%N)
  echo "cnn 100 epochs: $(echo "$mid - $start" | bc) s; mobilenet_v2 50 epochs: $(echo "$end - $mid" | bc) s;" \
       "total $(echo "$end - $start" | bc) s (the study: 5877 s)"
  python benchmarks/train_throughput.py --accelerator gpu --precision bf16-mixed --steps 50
} 2>&1 | tee "$OUT/gpu_study.log"
cp /tmp/runs/cnn/history.csv "$OUT/cnn_history.csv"
cp /tmp/runs/mobilenet/history.csv "$OUT/mobilenet_history.csv"
