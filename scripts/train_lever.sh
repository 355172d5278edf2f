#!/usr/bin/env bash
# Train three seeds of the shipped MobileNet recipe with one change, for benchmarks/accuracy.md:
#   scripts/train_lever.sh mobilenet baseline --size 128
#   scripts/train_lever.sh mobilenet no-class-weights --size 128 --class-weights none
# -> runs/levers/pneumo-mobilenet-<lever>-s{1,2,3}/ (see train_seeds.sh for the options).
# The levers were measured against the recipe at 128 px ("baseline"); scripts/gpu_ship.sh
# lists them all with their flags.
set -euo pipefail
cd "$(dirname "$0")/.."
model=$1; lever=$2; shift 2
exec scripts/train_seeds.sh levers "pneumo-${model}-${lever}" "configs/pneumo-${model}.yaml" "$@"
