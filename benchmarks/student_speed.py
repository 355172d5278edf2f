"""Which architectures can be the fast default at all: ONNX Runtime images per second of each candidate student.

    python benchmarks/student_speed.py [--rounds 5] [--batch 32]

Each architecture is built untrained (speed does not depend on the weights), written as an ONNX graph by
the function ``pneumo export`` uses, and timed on the same random batches at its published input size.
Rounds alternate the architectures so that what else the machine does falls on all
of them; the ratio to MobileNetV2, the architecture of the measured students, is the figure to quote on a
noisy machine. The graph alone is timed: decoding and resizing add the same cost to every architecture.
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from _common import malloc_mode
from pneumo.export.onnx import export_graph
from pneumo.labels import CLASSES
from pneumo.models.efficientnet_lite import INPUT_SIZES
from pneumo.models.registry import create_model

CANDIDATES = {"mobilenet_v2": 224, **{f"efficientnet_lite{v}": size for v, size in INPUT_SIZES.items()}}


def session(name: str, size: int, folder: Path) -> ort.InferenceSession:
    path = folder / f"{name}.onnx"
    export_graph(create_model(name, num_classes=len(CLASSES)).eval(), torch.rand(2, 1, size, size), path, ["logits"])
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=4, help="batches per architecture per round")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        sessions = {name: session(name, size, Path(folder)) for name, size in CANDIDATES.items()}
        batches = {name: rng.random((args.batch, 1, size, size), dtype=np.float32) for name, size in CANDIDATES.items()}
        for name, run in sessions.items():  # warm-up
            run.run(None, {"image": batches[name]})
        seconds = {name: 0.0 for name in sessions}
        for _ in range(args.rounds):
            for name, run in sessions.items():
                started = time.perf_counter()
                for _ in range(args.batches):
                    run.run(None, {"image": batches[name]})
                seconds[name] += time.perf_counter() - started
    images = args.rounds * args.batches * args.batch
    print(f"{os.cpu_count()} cores; malloc {malloc_mode()}; onnxruntime {ort.__version__}; "
          f"{images} images per architecture in batches of {args.batch}")
    print(f"{'architecture':<20} {'px':>4} {'images/s':>9} {'vs MobileNetV2':>15}")
    reference = images / seconds["mobilenet_v2"]
    for name, size in CANDIDATES.items():
        rate = images / seconds[name]
        print(f"{name:<20} {size:>4} {rate:>9.1f} {rate / reference:>14.2f}x")


if __name__ == "__main__":
    main()
