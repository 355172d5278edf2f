#!/usr/bin/env bash
# Train the shipped models' seeds: runs/ship/<model>-s<seed>/. Finished runs are resumed
# (a no-op when complete), so the script can be rerun after an interruption.
# Usage: scripts/train_shipped.sh [mobilenet|cnn ...]   (default: both)
set -euo pipefail
cd "$(dirname "$0")/.."
models=("${@:-mobilenet cnn}")
for model in ${models[@]}; do
  for seed in 1 2 3; do
    run="runs/ship/pneumo-${model}-s${seed}"
    if [[ -f "$run/model.pt" ]]; then echo "done: $run"; continue; fi
    if [[ -f "$run/config.yaml" ]]; then
      pneumo train --resume "$run" --quiet
    else
      pneumo train --config "configs/pneumo-${model}.yaml" --seed "$seed" --runs-dir runs/ship \
        --name "pneumo-${model}-s${seed}" --quiet
    fi
  done
done
