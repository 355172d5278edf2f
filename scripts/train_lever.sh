#!/usr/bin/env bash
# Train three seeds of a shipped recipe with one change, for benchmarks/accuracy.md:
#   scripts/train_lever.sh mobilenet no-class-weights --class-weights none
# -> runs/levers/pneumo-mobilenet-no-class-weights-s{1,2,3}/ (see train_seeds.sh for the options).
set -euo pipefail
cd "$(dirname "$0")/.."
model=$1; lever=$2; shift 2
exec scripts/train_seeds.sh levers "pneumo-${model}-${lever}" "configs/pneumo-${model}.yaml" "$@"
