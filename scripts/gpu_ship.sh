#!/usr/bin/env bash
# Issue 6 on the device machine (one GPU), in phases (default: train finalize):
#   train     3 seeds of both shipped recipes, one run at a time -> $PNEUMO_RUNS/ship/
#   finalize  scripts/finalize_shipped.py for both -> models/
#   levers    3 seeds of the MobileNet recipe at 128 px and of each training lever, then
#             scripts/lever_table.py -> models/pneumo-mobilenet/training_levers.json
# Copy the data and weights into the checkout first (git-ignored .carry/):
#   mkdir -p .carry && cp -r ../shared/datasets/chest_xray .carry/ && cp ../shared/weights/mobilenet_v2_imagenet.pth .carry/
# `pneumo` must be on the PATH (scripts/gpu_session.sh sees to that and brings the results back).
set -euo pipefail
cd "$(dirname "$0")/.."
phases=("$@")
(( ${#phases[@]} )) || phases=(train finalize)
data=.carry/chest_xray
# One run at a time: runs sharing a GPU are time-sliced, and these small models are bound by
# per-step overhead. Three 224 px MobileNets at once took 24 s per 1024-image epoch each, one
# 128 px MobileNet alone 1.2 s (benchmarks/gpu-h100-2026-11-26/smoke.log).
export PNEUMO_RUNS=${PNEUMO_RUNS:-/tmp/pneumo-runs} PNEUMO_JOBS=1 PYTHONUNBUFFERED=1
# PNEUMO_DEVICE_FLAGS="--accelerator cpu --epochs 1 --max-train-images 32" makes a quick CPU rehearsal.
gpu="${PNEUMO_DEVICE_FLAGS:---accelerator gpu --precision bf16-mixed} --data $data"
mobilenet="--pretrained .carry/mobilenet_v2_imagenet.pth"

# Each lever: its name, then its flags on top of configs/pneumo-mobilenet.yaml. The levers were
# chosen against the recipe at 128 px (the study's size), so all but those at 224 px say --size
# 128; size-224-stronger-augmentation combines two of them (lever_table.py compares it with size-224).
LEVERS=(
  "baseline --size 128"
  "no-class-weights --size 128 --class-weights none"
  "no-finetune-schedule --size 128 --freeze-epochs 0 --backbone-lr-scale 1"
  "stronger-augmentation --size 128 --zoom 0.15 --brightness 0.1 --contrast 0.2 --gamma 0.25"
  "mixup --size 128 --mixup 0.2"
  "no-label-smoothing --size 128 --label-smoothing 0"
  "size-224 --size 224"
  "size-224-stronger-augmentation --zoom 0.15 --brightness 0.1 --contrast 0.2 --gamma 0.25"
)

train() {  # train <label> <train_seeds.sh arguments...>, timed
  local label=$1 start=$SECONDS
  shift
  scripts/train_seeds.sh "$@"
  echo "$label: $((SECONDS - start)) s for 3 seeds"
}

nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
for size in 128 224; do pneumo prepare --data "$data" --size "$size" --cache-dir cache; done
for phase in "${phases[@]}"; do
  case $phase in
    train)
      PNEUMO_TRAIN_FLAGS="$gpu $mobilenet" train ship-mobilenet ship pneumo-mobilenet configs/pneumo-mobilenet.yaml
      PNEUMO_TRAIN_FLAGS="$gpu" train ship-cnn ship pneumo-cnn configs/pneumo-cnn.yaml
      ;;
    finalize)
      PNEUMO_DATA="$data" python scripts/finalize_shipped.py mobilenet
      PNEUMO_DATA="$data" python scripts/finalize_shipped.py cnn
      ;;
    levers)
      export PNEUMO_TRAIN_FLAGS="$gpu $mobilenet"
      for lever in "${LEVERS[@]}"; do
        # shellcheck disable=SC2086  # the flags are separate words
        train "${lever%% *}" levers "pneumo-mobilenet-${lever%% *}" configs/pneumo-mobilenet.yaml ${lever#* }
      done
      python scripts/lever_table.py mobilenet "$data" > /dev/null
      ;;
    *) echo "unknown phase '$phase' (train, finalize or levers)" >&2; exit 2 ;;
  esac
done
