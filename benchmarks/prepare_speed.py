"""How fast ``prepare`` decodes, grayscales and resizes the shared training split, cold and warm.

    python benchmarks/prepare_speed.py [DATA] [--size 128]

Target: the 5216 shared training images at 128x128 in under 10 s on the 2-core
machine; a second run with the same settings under 1 s.
"""

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from pneumo.data.cache import prepare_folder


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", nargs="?", default=os.environ.get("PNEUMO_DATA", "../shared/datasets/chest_xray"))
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    cache = Path(tempfile.mkdtemp(prefix="pneumo-bench-"))
    try:
        started = time.perf_counter()
        cold = prepare_folder(Path(args.data), size=args.size, cache_dir=cache)
        cold_seconds = time.perf_counter() - started
        started = time.perf_counter()
        warm = prepare_folder(Path(args.data), size=args.size, cache_dir=cache)
        warm_seconds = time.perf_counter() - started
    finally:
        shutil.rmtree(cache)
    print(f"cores: {os.cpu_count()}")
    print(f"cold: {len(cold.data)} images at {args.size}px in {cold_seconds:.2f} s "
          f"({len(cold.data) / cold_seconds:.0f} images/s, {cold.decoded} decoded)")
    print(f"warm: {len(warm.data)} images in {warm_seconds:.3f} s ({warm.reused} reused, {warm.decoded} decoded)")


if __name__ == "__main__":
    main()
