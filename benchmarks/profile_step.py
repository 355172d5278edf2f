"""Where a training step's time goes: torch.profiler over steps of the real training loop.

    python benchmarks/profile_step.py [--model cnn] [--size 128] [--skip 30] [--steps 30]
        [--accelerator auto] [--precision 32-true] [--compile off] [--no-deterministic]

On a GPU these small models are limited by the host: the compiled cnn step alone runs in
1.5 ms on an H100 and the training loop in 4.5 ms (README, Speed). This trains ``--model``
through ``pneumo.training.train`` (Lightning, augmentation, logging, checkpoints), profiles
``--steps`` training steps after skipping ``--skip`` (compilation and warm-up), and prints the
wall time per step, the time the device spent in kernels per step and their ratio (how busy the
device was), then the operations and Lightning hooks with the most host time.
"""

import argparse
import tempfile
from pathlib import Path

import lightning as L
from torch.profiler import ProfilerActivity, profile, schedule

from _common import add_loop_options, cache_dir, device_for, malloc_mode
from pneumo.config import TrainConfig
from pneumo.training.train import quiet_lightning, train


class StepProfiler(L.Callback):
    """Runs torch.profiler over training steps ``skip + 1 .. skip + steps`` (after one warm-up step)."""

    def __init__(self, skip: int, steps: int, device: str):
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
        self.steps = steps
        self.profiler = profile(activities=activities, schedule=schedule(wait=skip, warmup=1, active=steps))

    def on_train_start(self, trainer, pl_module) -> None:
        self.profiler.start()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.profiler.step()

    def on_train_end(self, trainer, pl_module) -> None:
        self.profiler.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--skip", type=int, default=30, help="training steps before profiling (compilation, warm-up)")
    parser.add_argument("--steps", type=int, default=30, help="training steps profiled")
    parser.add_argument("--no-deterministic", dest="deterministic", action="store_false")
    parser.add_argument("--rows", type=int, default=25)
    add_loop_options(parser)
    args = parser.parse_args()
    quiet_lightning()
    malloc = malloc_mode()
    device, name = device_for(args.accelerator)
    batches = args.skip + args.steps + 2  # one epoch holds every profiled step
    profiler = StepProfiler(args.skip, args.steps, device)
    with tempfile.TemporaryDirectory() as folder:
        config = TrainConfig().replace(model=args.model, epochs=1, size=args.size, data=args.data,
                                       cache_dir=cache_dir(), max_train_images=batches * 32,
                                       accelerator=args.accelerator, precision=args.precision, compile=args.compile,
                                       deterministic=args.deterministic)
        train(config, Path(folder) / "run", progress_bar=False, callbacks=[profiler])
    events = profiler.profiler.key_averages()
    steps = [event for event in events if event.key.startswith("ProfilerStep")]
    wall_ms = sum(event.cpu_time_total for event in steps) / 1000 / args.steps
    print(f"{args.model} on {name}; size {args.size}; batch 32; precision {args.precision}; compile {args.compile}; "
          f"malloc {malloc}; {args.steps} steps profiled after {args.skip}")
    print(f"wall per training step: {wall_ms:.2f} ms")
    if device == "cuda":
        kernel_ms = sum(event.self_device_time_total for event in events) / 1000 / args.steps
        print(f"device kernel time per step: {kernel_ms:.2f} ms ({kernel_ms / wall_ms:.0%} busy)")
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
