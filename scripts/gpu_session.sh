#!/usr/bin/env bash
# Everything a session lent the GPU machine does there, in one call of at most 10 minutes:
#   scripts/gpu_ship.sh train   the shipped recipes' seeds (issue 6; finalize runs anywhere after)
#   scripts/gpu_study.sh        the study's protocol timed, and the pipeline/synthetic ratio (issue 3)
# PNEUMO_SESSION_STEPS picks the steps (default "study"), PNEUMO_STUDY_PHASES the study's phases
# (e.g. "protocol protocol": empty compile cache, then warm). On an H100 the ship step took 400 s
# and the study step 364 s (protocol 259 s, compiled): a session's 15 minutes of device time,
# machine start included, hold one call of each only when the machine stays warm between them.
# Each step has its own time limit, so what finished comes back when a step runs long.
# The device returns at most 8 files from $OUT: the six seeds' bundles, one tarball of the run
# folders without checkpoints or bundles (histories, configs, environments, curves, summaries)
# and this log. Unpack with: tar -xzf runs.tar.gz -C runs/ and put each <run>.pt at runs/ship/<run>/model.pt.
#
# Before the call: data and weights in .carry/ (see gpu_ship.sh), carried with carry=[".carry"].
# The tree that travels is limited to 64 MiB, and the data, weights and models/ together exceed
# that: move models/ out of the checkout for the call (nothing here reads it).
set -uo pipefail
shopt -s nullglob
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder that comes back}"
export PNEUMO_RUNS=/tmp/pneumo-runs PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PATH=/tmp/pneumo-bin:$PATH
# Nothing can be installed there, and nothing needs to be: run pneumo from the source tree.
mkdir -p /tmp/pneumo-bin
printf '#!/bin/sh\nexec python3 -c "from pneumo.cli import app; app()" "$@"\n' > /tmp/pneumo-bin/pneumo
chmod +x /tmp/pneumo-bin/pneumo

step() {  # step <seconds> <command...>: run it with a time limit, report how it ended
  local limit=$1 start=$SECONDS
  shift
  timeout --kill-after=10 "$limit" "$@"
  echo "== $* ended with status $? after $((SECONDS - start)) s (limit $limit s)"
}
main() {
  echo "commit ${1:-unknown}; $(date -u)"
  # The device's copy of .git can lag the tree it was sent (2026-11-26: runs said the parent
  # commit), so the runs' environment.yaml records the commit given here instead.
  if [[ -n ${1:-} ]]; then export PNEUMO_GIT_COMMIT=$1; fi
  for name in ${PNEUMO_SESSION_STEPS:-study}; do
    case $name in
      ship) step "${PNEUMO_SHIP_LIMIT:-430}" scripts/gpu_ship.sh train ;;
      # shellcheck disable=SC2086  # the phases are separate words
      study) step "${PNEUMO_STUDY_LIMIT:-480}" scripts/gpu_study.sh ${PNEUMO_STUDY_PHASES:-} ;;
    esac
  done
  for bundle in "$PNEUMO_RUNS"/ship/*/model.pt; do
    cp "$bundle" "$OUT/$(basename "$(dirname "$bundle")").pt"
  done
  tar -czf "$OUT/runs.tar.gz" -C "$PNEUMO_RUNS" --exclude='*.ckpt' --exclude=model.pt .
  ls -l "$OUT"
}

main "$@" 2>&1 | tee "$OUT/device.log"
