"""What the training loop itself costs per step: the real loop around a model that does nothing.

    python benchmarks/loop_overhead.py [--model probe] [--size 128] [--skip 20] [--steps 100]
        [--accelerator auto] [--precision 32-true] [--compile off]

On a GPU the study's small models are limited by the host (README, Speed): the compiled cnn
step alone takes 1.5 ms on an H100, the training loop 4.5 ms. This runs ``pneumo``'s training
loop (Lightning, batch fetch and copy, 1/255 scaling, augmentation, loss and accuracy sums,
optimizer) around ``--model``: by default ``probe``, a 3-parameter model whose step costs next
to nothing, so the time per step is the loop's own. It prints the time per training step
(validation excluded) with and without augmentation, and on a GPU also with batches in pageable
memory instead of page-locked memory, which makes every copy to the GPU wait for the work
already queued there. ``--model cnn`` shows the same for a real model.
"""

import argparse
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from torch import nn

from _common import add_loop_options, cache_dir, device_for, malloc_mode
from pneumo.config import TrainConfig
from pneumo.models.registry import ModelSpec, register_model
from pneumo.training.train import quiet_lightning, train

register_model(ModelSpec(
    name="probe", classifier="2", cam_layer="0", description="mean pixel -> linear: a step that costs next to nothing",
    build=lambda num_classes, pretrained: nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1, num_classes)),
))


class StepTimer(L.Callback):
    """Wall time per training step over the epoch's last ``steps`` steps, the device synchronized at both ends."""

    def __init__(self, steps: int, pageable: bool):
        self.steps, self.pageable = steps, pageable
        self.ms_per_step = float("nan")
        self._started = 0.0

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.pageable:  # before Lightning asks the DataModule for its loaders
            trainer.datamodule.pin_memory = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        last = trainer.num_training_batches - 1
        if batch_idx in (last - self.steps, last):
            if pl_module.device.type == "cuda":
                torch.cuda.synchronize()
            if batch_idx == last:
                self.ms_per_step = 1000 * (time.perf_counter() - self._started) / self.steps
            self._started = time.perf_counter()


def ms_per_step(args: argparse.Namespace, *, augment: bool, pageable: bool) -> float:
    timer = StepTimer(args.steps, pageable)
    no_augmentation = {} if augment else {"rotation": 0.0, "shift": 0.0, "zoom": 0.0}
    with tempfile.TemporaryDirectory() as folder:
        config = TrainConfig().replace(model=args.model, epochs=1, size=args.size, data=args.data,
                                       cache_dir=cache_dir(),
                                       max_train_images=(args.skip + args.steps + 1) * 32, accelerator=args.accelerator,
                                       precision=args.precision, compile=args.compile, deterministic=False,
                                       **no_augmentation)
        train(config, Path(folder) / "run", progress_bar=False, callbacks=[timer])
    return timer.ms_per_step


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="probe", help="probe (the loop alone) or a registered model")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--skip", type=int, default=20, help="training steps before timing (warm-up, compilation)")
    parser.add_argument("--steps", type=int, default=100, help="training steps timed")
    add_loop_options(parser)
    args = parser.parse_args()
    quiet_lightning()
    malloc = malloc_mode()
    device, name = device_for(args.accelerator)
    print(f"{args.model} on {name}; size {args.size}; batch 32; precision {args.precision}; compile {args.compile}; "
          f"malloc {malloc}; {args.steps} training steps timed after {args.skip + 1}")
    variants = [("augmented", True, False), ("not augmented", False, False)]
    if device == "cuda":  # on a CPU nothing is page-locked anyway
        variants.append(("augmented, pageable batches", True, True))
    for label, augment, pageable in variants:
        ms = ms_per_step(args, augment=augment, pageable=pageable)
        print(f"{label:<28} {ms:6.2f} ms per step ({32000 / ms:.0f} images/s)")


if __name__ == "__main__":
    main()
