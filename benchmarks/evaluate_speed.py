"""Time ``evaluate`` on 624 images at 128 px, bootstrap (1000 patient resamples) included.

    python benchmarks/evaluate_speed.py --model runs/x [--backend onnx]

Target: under 10 s on the 2-core CPU. 624 internal-test images stand in for the
archive's test split (same count), which is not available here.
"""

import argparse
import os
import time
from pathlib import Path

from _common import malloc_mode
from pneumo.evaluation.evaluate import evaluate, select_images
from pneumo.models.bundle import load_bundle

SPLIT = Path(__file__).resolve().parents[1] / "splits" / "internal.csv"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--backend", choices=("torch", "onnx"), default="torch")
    parser.add_argument("--data", default=os.environ.get("PNEUMO_DATA", "../shared/datasets/chest_xray"))
    args = parser.parse_args()
    malloc = malloc_mode()
    started = time.perf_counter()
    bundle = load_bundle(args.model)
    images, _ = select_images(Path(args.data), size=bundle.size, cache_dir=Path("cache"), role="test", split_file=SPLIT)
    images = images.subset(slice(0, 624))
    loaded = time.perf_counter()
    metrics, _ = evaluate(bundle, images, resamples=1000, backend=args.backend)
    done = time.perf_counter()
    print(f"model {bundle.model_id} ({args.backend}); {metrics['images']} images of {metrics['patients']} patients; "
          f"{os.cpu_count()} cores; malloc {malloc}")
    print(f"load model + cached images: {loaded - started:.2f} s; inference + metrics + 1000-resample bootstrap: "
          f"{done - loaded:.2f} s; total {done - started:.2f} s")


if __name__ == "__main__":
    main()
