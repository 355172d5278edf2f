#!/usr/bin/env bash
# Issue 6 on the device machine (one GPU), prepared for a session that is lent one:
#   ship    3 seeds of both shipped recipes, then finalize_shipped.py for both -> $OUT/models/
#   levers  3 seeds of the MobileNet recipe and of each training lever, then lever_table.py
#           -> $OUT/models/pneumo-mobilenet/training_levers.json
# (default: both). Copy the data and weights into the checkout first (git-ignored .carry/):
#   mkdir -p .carry && cp -r ../shared/datasets/chest_xray .carry/ && cp ../shared/weights/mobilenet_v2_imagenet.pth .carry/
# run it with carry=[".carry"], then copy $OUT/models/ over models/ and run scripts/accuracy_report.py.
set -euo pipefail
cd "$(dirname "$0")/.."
phases=("$@")
(( ${#phases[@]} )) || phases=(ship levers)
OUT=${OUT:-out/gpu-ship}
mkdir -p "$OUT/histories"
# The device has torch, lightning, sklearn, OpenCV, typer and rich, and nothing can be fetched there.
python3 -c "import pneumo" 2>/dev/null || python3 -m pip install --quiet --no-deps --no-build-isolation -e .
data=.carry/chest_xray
export PNEUMO_RUNS=/tmp/pneumo-runs PNEUMO_JOBS=${PNEUMO_JOBS:-6} PYTHONUNBUFFERED=1
# PNEUMO_DEVICE_FLAGS="--accelerator cpu --epochs 1 --max-train-images 32" makes a quick CPU rehearsal.
gpu="${PNEUMO_DEVICE_FLAGS:---accelerator gpu --precision bf16-mixed} --data $data"
mobilenet="--pretrained .carry/mobilenet_v2_imagenet.pth"

# Each lever: its name, then the flags that differ from configs/pneumo-mobilenet.yaml.
LEVERS=(
  "no-class-weights --class-weights none"
  "no-finetune-schedule --freeze-epochs 0 --backbone-lr-scale 1"
  "stronger-augmentation --zoom 0.15 --brightness 0.1 --contrast 0.2 --gamma 0.25"
  "mixup --mixup 0.2"
  "no-label-smoothing --label-smoothing 0"
  "size-224 --size 224"
)

train() {  # train <label> <train_seeds.sh arguments...>, timed
  local label=$1 start=$SECONDS
  shift
  scripts/train_seeds.sh "$@"
  echo "$label: $((SECONDS - start)) s for 3 seeds"
}

{
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
  pneumo prepare --data "$data" --size 128 --cache-dir cache
  for phase in "${phases[@]}"; do
    case $phase in
      ship)
        PNEUMO_TRAIN_FLAGS="$gpu $mobilenet" train ship-mobilenet ship pneumo-mobilenet configs/pneumo-mobilenet.yaml
        PNEUMO_TRAIN_FLAGS="$gpu" train ship-cnn ship pneumo-cnn configs/pneumo-cnn.yaml
        python scripts/finalize_shipped.py mobilenet "$data"
        python scripts/finalize_shipped.py cnn "$data"
        ;;
      levers)
        pneumo prepare --data "$data" --size 224 --cache-dir cache
        export PNEUMO_TRAIN_FLAGS="$gpu $mobilenet"
        train ship-mobilenet ship pneumo-mobilenet configs/pneumo-mobilenet.yaml
        for lever in "${LEVERS[@]}"; do
          # shellcheck disable=SC2086  # the flags are separate words
          train "${lever%% *}" levers "pneumo-mobilenet-${lever%% *}" configs/pneumo-mobilenet.yaml ${lever#* }
        done
        python scripts/lever_table.py mobilenet "$data" > /dev/null
        ;;
      *) echo "unknown phase '$phase' (ship or levers)" >&2; exit 2 ;;
    esac
  done
} 2>&1 | tee "$OUT/gpu_ship.log"
cp -r models "$OUT/"
for history in "$PNEUMO_RUNS"/*/*/history.csv; do
  cp "$history" "$OUT/histories/$(basename "$(dirname "$history")").csv"
done
