#!/usr/bin/env bash
# The device-machine check of issue 3, in phases (default: protocol throughput):
#   protocol    the study's whole protocol (cnn 100 epochs + mobilenet_v2 50 epochs on the grouped
#               80/20 split of the shared training images, study defaults otherwise), timed on one GPU
#   throughput  benchmarks/train_throughput.py's pipeline/synthetic ratio there, compiled and eager
#   compile     benchmarks/compile_time.py: compilation from an empty cache, training and validation
#   profile     benchmarks/profile_step.py: where the compiled cnn's training step spends its time;
#               benchmarks/loop_overhead.py: the loop's own cost per step, page-locked vs pageable batches
# "protocol protocol" times it with TorchInductor's on-disk cache empty, then warm.
#
# The protocol runs first, so that torch.compile starts from an empty cache and its compilation
# time is part of the figure; the models train one after the other (runs sharing a GPU are
# time-sliced: benchmarks/gpu-h100-2026-11-26/smoke.log). Speed options: bf16, cuDNN free to
# choose algorithms, and torch.compile in mode PNEUMO_STUDY_COMPILE (default reduce-overhead:
# CUDA graphs); a model whose compiled run fails is run again without it, and the log says so.
# Copy the data and weights into the checkout first (git-ignored .carry/):
#   mkdir -p .carry && cp -r ../shared/datasets/chest_xray .carry/ && cp ../shared/weights/mobilenet_v2_imagenet.pth .carry/
# `pneumo` must be on the PATH (scripts/gpu_session.sh sees to that and brings the results back).
set -euo pipefail
cd "$(dirname "$0")/.."
root=${PNEUMO_RUNS:-/tmp/pneumo-runs}
phases=("$@")
(( ${#phases[@]} )) || phases=(protocol throughput)
export PNEUMO_DATA=.carry/chest_xray PYTHONUNBUFFERED=1
# PNEUMO_DEVICE_FLAGS="--accelerator cpu --epochs 1 --max-train-images 32" makes a quick CPU rehearsal.
read -r -a device <<< "${PNEUMO_DEVICE_FLAGS:---accelerator gpu --precision bf16-mixed}"
compile=${PNEUMO_STUDY_COMPILE:-reduce-overhead}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
pneumo prepare --data "$PNEUMO_DATA" --size 128 --cache-dir cache

study() {  # study <name> <pneumo train flags...>: one model of the protocol, timed
  local name=$1 start
  shift
  start=$(date +%s.%N)
  if ! pneumo train "$@" --runs-dir "$runs" --name "$name" --quiet "${device[@]}" --no-deterministic --compile "$compile"
  then
    echo "!! $name failed with --compile $compile; again without it"
    rm -rf "${runs:?}/$name"
    pneumo train "$@" --runs-dir "$runs" --name "$name" --quiet "${device[@]}" --no-deterministic
  fi
  python3 -c "import sys, time; print(f'$name: {time.time() - float(sys.argv[1]):.1f} s')" "$start"
}
protocol() {  # the whole protocol once, timed; each repetition gets its own run folders
  local start
  start=$(date +%s.%N)
  runs=$root/study$((++repetition))
  # TorchInductor keeps compiled kernels on disk: the first run here compiles from nothing.
  local cache="empty"
  compgen -G "/tmp/torchinductor_*" > /dev/null && cache="warm"
  study cnn --model cnn --epochs 100
  study mobilenet --model mobilenet_v2 --pretrained .carry/mobilenet_v2_imagenet.pth --epochs 50
  python3 -c "import sys, time; print(f'protocol total {time.time() - float(sys.argv[1]):.1f} s, --compile $compile '
    f'--no-deterministic, compile cache $cache (the study: 5877 s; eager and deterministic before the loop '
    f'changes: 431 s; compiled, cache empty, 2026-11-26: 258.6 s)')" "$start"
}

throughput() {
  python3 benchmarks/train_throughput.py --accelerator gpu --precision bf16-mixed --steps 50 --compile "$compile" \
    --no-deterministic
  python3 benchmarks/train_throughput.py --accelerator gpu --precision bf16-mixed --steps 50
}

profile() {
  python3 benchmarks/profile_step.py --accelerator gpu --precision bf16-mixed --compile "$compile" --no-deterministic
  python3 benchmarks/loop_overhead.py --accelerator gpu --precision bf16-mixed
  python3 benchmarks/loop_overhead.py --accelerator gpu --precision bf16-mixed --model cnn --compile "$compile"
}

repetition=0
for phase in "${phases[@]}"; do
  # All but the protocol need a GPU: a CPU rehearsal (PNEUMO_DEVICE_FLAGS set) skips them.
  case $phase in
    protocol) protocol ;;
    throughput) [[ -n ${PNEUMO_DEVICE_FLAGS:-} ]] || throughput ;;
    compile) [[ -n ${PNEUMO_DEVICE_FLAGS:-} ]] || python3 benchmarks/compile_time.py --accelerator gpu \
      --precision bf16-mixed --mode "$compile" ;;
    profile) [[ -n ${PNEUMO_DEVICE_FLAGS:-} ]] || profile ;;
    *) echo "unknown phase '$phase' (protocol, throughput, compile or profile)" >&2; exit 2 ;;
  esac
done
