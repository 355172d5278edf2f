"""Load test of a running ``pneumo serve``: N requests from C concurrent clients on loopback.

    pneumo serve --model models/pneumo-mobilenet --port 8000 &
    python benchmarks/serve_load.py --url http://127.0.0.1:8000 --requests 200 --concurrency 8

Prints throughput (requests/s) and p50/p95 latency. Only loopback addresses are accepted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import httpx


def run_load(url: str, images: list[bytes], *, requests: int = 200, concurrency: int = 8, gradcam: bool = False) -> dict:
    """Send ``requests`` uploads over ``concurrency`` clients; returns counts and latencies in ms."""
    host = urlparse(url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"load tests only target loopback; got {host!r}")
    latencies: list[float] = []
    errors = 0

    def one(number: int) -> tuple[float, bool]:
        with httpx.Client(timeout=60) as client:
            started = time.perf_counter()
            response = client.post(f"{url}/v1/predict", params={"gradcam": gradcam},
                                   files={"file": (f"{number}.jpeg", images[number % len(images)])})
            return (time.perf_counter() - started) * 1000, response.status_code == 200

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for latency, ok in pool.map(one, range(requests)):
            latencies.append(latency)
            errors += not ok
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "requests": requests, "concurrency": concurrency, "errors": errors, "seconds": round(elapsed, 2),
        "throughput_rps": round(requests / elapsed, 1), "p50_ms": round(statistics.median(ordered), 1),
        "p95_ms": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--gradcam", action="store_true")
    parser.add_argument("--images", default="../shared/datasets/chest_xray/train/NORMAL")
    args = parser.parse_args()
    files = sorted(Path(args.images).glob("*.jpeg"))[:50]
    if not files:
        sys.exit(f"no JPEG images in {args.images}")
    result = run_load(args.url, [f.read_bytes() for f in files], requests=args.requests,
                      concurrency=args.concurrency, gradcam=args.gradcam)
    for key, value in result.items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
