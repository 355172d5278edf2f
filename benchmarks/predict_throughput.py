"""End-to-end prediction throughput from files on disk (decode + resize + model), per backend.

    python benchmarks/predict_throughput.py --model runs/x [--model runs/y] [--images 512]

Target: at least 200 images/s on the 2-core CPU for cnn and mobilenet_v2 at 128 px
with the ONNX backend (export first: pneumo export --model MODEL --format onnx).
"""

import argparse
import os
import time
from pathlib import Path

from _common import malloc_mode
from pneumo.predict import Predictor


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", action="append", required=True)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--data", default=os.environ.get("PNEUMO_DATA", "../shared/datasets/chest_xray"))
    args = parser.parse_args()
    files = sorted(str(p) for p in Path(args.data).rglob("*.jpeg"))[: args.images]
    malloc = malloc_mode()
    print(f"{len(files)} JPEG files from {args.data}; {os.cpu_count()} cores; malloc {malloc}")
    print(f"{'model':<28} {'backend':<8} {'images/s':>9}")
    for model in args.model:
        for backend in ("torch", "onnx"):
            predictor = Predictor(model, backend=backend)
            predictor.predict_files(files[:32])  # warm-up
            started = time.perf_counter()
            results = predictor.predict_files(files)
            elapsed = time.perf_counter() - started
            assert all(r.ok for r in results)
            print(f"{predictor.model_id:<28} {backend:<8} {len(files) / elapsed:>9.1f}")


if __name__ == "__main__":
    main()
