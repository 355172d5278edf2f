"""Fixed costs of the training loop, measured on many short epochs of a tiny run.

    python benchmarks/epoch_overhead.py [--epochs 30] [--steps 4] [--size 32] [--accelerator cpu]

The study's protocol is 150 epochs of ~130 short steps on a GPU, so what the loop spends per
epoch outside the steps (history, figure, checkpoints, validation set-up) adds up. Prints the fit
time, the time inside the epochs (training and validation, from history.csv), and the time
between them per epoch.
"""

import argparse
import csv
import tempfile
import time
from pathlib import Path

from _common import cache_dir, default_data
from pneumo.allocator import keep_freed_memory
from pneumo.config import TrainConfig
from pneumo.training.train import quiet_lightning, train


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--steps", type=int, default=4, help="training batches of 32 per epoch")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--data", default=default_data())
    args = parser.parse_args()
    quiet_lightning()
    keep_freed_memory()
    with tempfile.TemporaryDirectory() as folder:
        config = TrainConfig().replace(model=args.model, epochs=args.epochs, size=args.size, data=args.data,
                                       cache_dir=cache_dir(), max_train_images=args.steps * 32,
                                       accelerator=args.accelerator)
        started = time.perf_counter()
        result = train(config, Path(folder) / "run", progress_bar=False)
        total = time.perf_counter() - started
        with (Path(folder) / "run" / "history.csv").open() as handle:
            inside = sum(float(row["seconds"]) for row in csv.DictReader(handle))
    print(f"{args.model}, {args.epochs} epochs of {args.steps} steps at {args.size} px on {args.accelerator}: "
          f"train() {total:.1f} s, fit {result.seconds:.1f} s, inside epochs {inside:.1f} s, "
          f"between epochs {1000 * (result.seconds - inside) / args.epochs:.0f} ms per epoch")


if __name__ == "__main__":
    main()
