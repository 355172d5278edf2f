"""Training images/s per model: through the real pipeline and on a synthetic in-memory batch.

    python benchmarks/train_throughput.py [--models cnn mobilenet_v2] [--size 128] [--steps 20] [--accelerator auto]
        [--precision 32-true] [--compile off] [--no-deterministic]

"pipeline" times Lightning's fit loop on the prepared cache (uint8 batches, augmentation on
the device); "synthetic" times bare forward/backward/step on one pre-made batch of the same
size on the same device. Their ratio shows how much the data pipeline costs (goal on GPU >= 0.8).
Both use the same model settings: channels_last, the precision, the fused optimizer on a GPU,
and ``--compile``.
"""

import argparse
import csv
import tempfile
import time
from pathlib import Path

import torch

from _common import add_loop_options, cache_dir, device_for, malloc_mode
from pneumo.config import TrainConfig
from pneumo.models import create_model
from pneumo.training.train import quiet_lightning, train


def synthetic(model_name: str, size: int, batch: int, steps: int, device: str, precision: str, compile_mode: str) -> float:
    model = create_model(model_name).to(device).to(memory_format=torch.channels_last)
    if compile_mode != "off":
        model.compile(mode=compile_mode)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True if device == "cuda" else None)
    images = torch.rand(batch, 1, size, size, device=device).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 3, (batch,), device=device)
    autocast = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")

    def step():
        with autocast:
            loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - started)


def pipeline(model_name: str, size: int, batch: int, steps: int, data: str, accelerator: str, precision: str,
             compile_mode: str, deterministic: bool) -> float:
    """Images/s of the second of two epochs of ``steps`` batches (the first warms up)."""
    with tempfile.TemporaryDirectory() as folder:
        config = TrainConfig().replace(model=model_name, epochs=2, batch_size=batch, size=size, data=data,
                                       cache_dir=cache_dir(), max_train_images=steps * batch,
                                       val_fraction=0.2, accelerator=accelerator, precision=precision,
                                       compile=compile_mode, deterministic=deterministic)
        train(config, Path(folder) / "run", progress_bar=False)
        with (Path(folder) / "run" / "history.csv").open() as handle:
            rows = list(csv.DictReader(handle))
    # "seconds" covers the training epoch and its validation; count the validation images too.
    val_images = max(steps * batch // 4, 0)
    return (steps * batch + val_images / 3) / float(rows[-1]["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["cnn", "mobilenet_v2"])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--no-deterministic", dest="deterministic", action="store_false",
                        help="let cuDNN choose the fastest algorithms in the pipeline run (synthetic never asks for determinism)")
    add_loop_options(parser)
    args = parser.parse_args()
    quiet_lightning()
    malloc = malloc_mode()
    device, name = device_for(args.accelerator)
    print(f"device: {name}; size {args.size}; batch {args.batch}; precision {args.precision}; "
          f"compile {args.compile}; deterministic {args.deterministic}; malloc {malloc}")
    print(f"{'model':<14} {'pipeline img/s':>15} {'synthetic img/s':>16} {'ratio':>6}")
    for model_name in args.models:
        real = pipeline(model_name, args.size, args.batch, args.steps, args.data, args.accelerator, args.precision,
                        args.compile, args.deterministic)
        fake = synthetic(model_name, args.size, args.batch, args.steps, device, args.precision, args.compile)
        print(f"{model_name:<14} {real:>15.1f} {fake:>16.1f} {real / fake:>6.2f}")


if __name__ == "__main__":
    main()
