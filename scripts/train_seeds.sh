#!/usr/bin/env bash
# Train seeds 1, 2 and 3 of one recipe into $PNEUMO_RUNS/<group>/<name>-s<seed>/ (default runs/):
#   scripts/train_seeds.sh ship pneumo-mobilenet configs/pneumo-mobilenet.yaml [pneumo train flags...]
# Finished runs are skipped and interrupted ones resumed, so it can be rerun at any time.
# PNEUMO_TRAIN_FLAGS adds flags to every new run (e.g. "--accelerator gpu --precision bf16-mixed");
# PNEUMO_JOBS trains that many seeds at once (default 1; several fit on one GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
group=$1; name=$2; config=$3; shift 3
runs="${PNEUMO_RUNS:-runs}/$group"
read -r -a extra <<< "${PNEUMO_TRAIN_FLAGS:-}"

train_seed() {
  local seed=$1 run="$runs/$name-s$1"
  shift
  if [[ -f "$run/model.pt" ]]; then echo "done: $run"; return; fi
  if [[ -f "$run/config.yaml" ]]; then
    pneumo train --resume "$run" --quiet
  else
    pneumo train --config "$config" --seed "$seed" --runs-dir "$runs" --name "$name-s$seed" --quiet "$@" "${extra[@]}"
  fi
}

pids=()
for seed in 1 2 3; do
  train_seed "$seed" "$@" &
  pids+=("$!")
  while (( $(jobs -rp | wc -l) >= ${PNEUMO_JOBS:-1} )); do sleep 2; done
done
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
exit "$failed"
