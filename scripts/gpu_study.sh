#!/usr/bin/env bash
# The device-machine check of issue 3: the study's whole protocol (cnn 100 epochs + mobilenet_v2
# 50 epochs on the grouped 80/20 split of the shared training images, study defaults otherwise)
# timed on one GPU, after benchmarks/train_throughput.py's pipeline/synthetic ratio there.
# Copy the data and weights into the checkout first (git-ignored .carry/):
#   mkdir -p .carry && cp -r ../shared/datasets/chest_xray .carry/ && cp ../shared/weights/mobilenet_v2_imagenet.pth .carry/
# `pneumo` must be on the PATH (scripts/gpu_session.sh sees to that and brings the results back).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${PNEUMO_RUNS:-/tmp/pneumo-runs}/study
export PNEUMO_DATA=.carry/chest_xray PYTHONUNBUFFERED=1
# PNEUMO_DEVICE_FLAGS="--accelerator cpu --epochs 1 --max-train-images 32" makes a quick CPU rehearsal.
read -r -a device <<< "${PNEUMO_DEVICE_FLAGS:---accelerator gpu --precision bf16-mixed}"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
pneumo prepare --data "$PNEUMO_DATA" --size 128 --cache-dir cache
if [[ -z ${PNEUMO_DEVICE_FLAGS:-} ]]; then
  python3 benchmarks/train_throughput.py --accelerator gpu --precision bf16-mixed --steps 50
fi
start=$(date +%s.%N)
pneumo train --model cnn --epochs 100 --runs-dir "$runs" --name cnn --quiet "${device[@]}"
mid=$(date +%s.%N)
pneumo train --model mobilenet_v2 --pretrained .carry/mobilenet_v2_imagenet.pth --epochs 50 --runs-dir "$runs" \
  --name mobilenet --quiet "${device[@]}"
end=$(date +%s.%N)
python3 -c "import sys; a, b, c = map(float, sys.argv[1:]); print(f'cnn 100 epochs: {b - a:.1f} s; '
  f'mobilenet_v2 50 epochs: {c - b:.1f} s; total {c - a:.1f} s (the study: 5877 s)')" "$start" "$mid" "$end"
