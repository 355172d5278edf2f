#!/usr/bin/env bash
# Train the shipped models' seeds: runs/ship/pneumo-<model>-s<seed>/ (see train_seeds.sh for the options).
# Usage: scripts/train_shipped.sh [mobilenet|cnn ...]   (default: both)
set -euo pipefail
cd "$(dirname "$0")/.."
models=("$@")
(( ${#models[@]} )) || models=(mobilenet cnn)
for model in "${models[@]}"; do
  scripts/train_seeds.sh ship "pneumo-${model}" "configs/pneumo-${model}.yaml"
done
