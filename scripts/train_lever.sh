#!/usr/bin/env bash
# Train three seeds of a shipped recipe with one change, for benchmarks/accuracy.md:
#   scripts/train_lever.sh mobilenet no-class-weights --class-weights none
# -> runs/levers/pneumo-mobilenet-no-class-weights-s{1,2,3}/ (finished runs are skipped, broken ones resumed).
set -euo pipefail
cd "$(dirname "$0")/.."
model=$1; lever=$2; shift 2
for seed in 1 2 3; do
  name="pneumo-${model}-${lever}-s${seed}"
  run="runs/levers/$name"
  if [[ -f "$run/model.pt" ]]; then echo "done: $run"; continue; fi
  if [[ -f "$run/config.yaml" ]]; then
    pneumo train --resume "$run" --quiet
  else
    pneumo train --config "configs/pneumo-${model}.yaml" --seed "$seed" --runs-dir runs/levers --name "$name" --quiet "$@"
  fi
done
