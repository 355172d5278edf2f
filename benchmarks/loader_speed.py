"""Host time per training batch spent fetching it: one indexing per batch against one per image.

    python benchmarks/loader_speed.py [--size 128] [--batch 32] [--epochs 5]

On a GPU these small models are held back by what the host does per step (README, Speed), and
fetching the batch is part of it. Times whole epochs of the training DataLoader over the shared
training images, as ``pneumo train`` builds it (``InMemoryImages``: ``__getitems__`` gathers a
batch at once), against torch's ``TensorDataset`` of the same tensors with the default collate
(one ``__getitem__`` per image, then a stack), which is what training used before.
"""

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from _common import cache_dir, default_data
from pneumo.data.cache import prepare_folder
from pneumo.training.module import EpochShuffle, InMemoryImages, whole_batch


def per_batch_ms(loader: DataLoader, epochs: int) -> float:
    batches, started = 0, time.perf_counter()
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        for _ in loader:
            batches += 1
    return 1000 * (time.perf_counter() - started) / batches


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--data", default=default_data())
    args = parser.parse_args()
    data = prepare_folder(Path(args.data), size=args.size, cache_dir=Path(cache_dir())).data
    everything = np.arange(len(data.labels))
    batched = InMemoryImages(data, everything)
    per_image = TensorDataset(batched.images, batched.labels)
    loaders = {
        "one indexing per batch (pneumo)": DataLoader(batched, batch_size=args.batch, collate_fn=whole_batch,
                                                      sampler=EpochShuffle(len(batched), 0), drop_last=True),
        "one per image + collate (TensorDataset)": DataLoader(per_image, batch_size=args.batch,
                                                              sampler=EpochShuffle(len(batched), 0), drop_last=True),
    }
    first, second = (iter(loader) for loader in loaders.values())
    a, b = next(first), next(second)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]), "the two loaders must yield the same batches"
    print(f"{len(batched)} images at {args.size} px, batch {args.batch}, {args.epochs} epochs, "
          f"{torch.get_num_threads()} threads")
    times = {name: per_batch_ms(loader, args.epochs) for name, loader in loaders.items()}
    for name, ms in times.items():
        print(f"{name:<42} {ms:7.3f} ms per batch")
    batched_ms, per_image_ms = times.values()
    print(f"per image / per batch: {per_image_ms / batched_ms:.1f}x")


if __name__ == "__main__":
    main()
