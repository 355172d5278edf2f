"""INT8 against float ONNX: images per second of the graph alone, the same batches, one process, alternating.

    python benchmarks/int8_speed.py --model models/pneumo-mobilenet --int8 /tmp/model-int8.onnx [--rounds 5]

Make the INT8 file first: pneumo export --model MODEL --quantize int8 --out FILE (it records its accuracy change).
Rounds alternate float and INT8 so that what else the machine does falls on both; the ratio is the figure to
quote on a noisy machine.
"""

import argparse
import os
import time
from pathlib import Path

import numpy as np

from _common import default_data, malloc_mode
from pneumo.data.readers import load_for_model
from pneumo.predict import Predictor


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True, help="a model folder with model.onnx")
    parser.add_argument("--int8", required=True, type=Path, help="its INT8 export")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--data", default=default_data())
    args = parser.parse_args()
    float_model, int8_model = Predictor(args.model, backend="onnx"), Predictor(args.int8, backend="onnx")
    files = sorted(Path(args.data).rglob("*.jpeg"))[: args.images]
    images = np.stack([load_for_model(f, float_model.size) for f in files])
    print(f"{len(images)} images at {float_model.size} px; {os.cpu_count()} cores; malloc {malloc_mode()}")
    rates = {"float": [], "int8": []}
    for _ in range(args.rounds):
        for name, model in (("float", float_model), ("int8", int8_model)):
            model.outputs(images[:64])  # warm-up
            started = time.perf_counter()
            model.outputs(images)
            rates[name].append(len(images) / (time.perf_counter() - started))
    for name, values in rates.items():
        print(f"{name:<6} median {np.median(values):7.1f} images/s (rounds: {', '.join(f'{v:.0f}' for v in values)})")
    print(f"ratio int8 / float: {np.median(rates['int8']) / np.median(rates['float']):.2f}")


if __name__ == "__main__":
    main()
