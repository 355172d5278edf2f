"""Server load against batch prediction, measured in one run on this machine.

    python benchmarks/serve_load.py                       # starts its own server on loopback
    python benchmarks/serve_load.py --model models/pneumo-mobilenet --requests 400

Prints, for the same model and images: ``predict``'s batch throughput (Predictor over files,
the backend the server uses), then the server's throughput and p50/p95/p99 latency at 1, 8 and
16 clients with its ratio to batch throughput, then a run with hostile uploads mixed in
(errors on good requests, peak RSS of the server process). Only loopback addresses are used.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import httpx

REPO = Path(__file__).resolve().parents[1]


def run_load(url: str, images: list[bytes], *, requests: int = 200, concurrency: int = 8, gradcam: bool = False,
             bad: list[tuple[str, bytes]] = ()) -> dict:
    """Send ``requests`` uploads from ``concurrency`` clients (one keep-alive connection each).

    ``bad`` uploads, when given, are sent between the good ones (one in four) and only have to be
    answered with a 4xx; latencies and errors are those of the good requests.
    """
    host = urlparse(url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"load tests only target loopback; got {host!r}")
    local = threading.local()

    def one(number: int) -> tuple[float, bool, bool]:
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=60)
        hostile = bool(bad) and number % 4 == 3
        name, data = bad[number % len(bad)] if hostile else (f"{number}.jpeg", images[number % len(images)])
        started = time.perf_counter()
        response = local.client.post(f"{url}/v1/predict", params={"gradcam": gradcam}, files={"file": (name, data)})
        ok = 400 <= response.status_code < 500 if hostile else response.status_code == 200
        return (time.perf_counter() - started) * 1000, ok, hostile

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        outcomes = list(pool.map(one, range(requests)))
    elapsed = time.perf_counter() - started
    good = sorted(latency for latency, _, hostile in outcomes if not hostile)

    def percentile(q: float) -> float:
        return round(good[min(len(good) - 1, int(q * len(good)))], 1)

    return {
        "requests": requests, "concurrency": concurrency, "seconds": round(elapsed, 2),
        "errors": sum(not ok for _, ok, hostile in outcomes if not hostile),
        "hostile_not_refused": sum(not ok for _, ok, hostile in outcomes if hostile),
        "throughput_rps": round(requests / elapsed, 1), "p50_ms": round(statistics.median(good), 1),
        "p95_ms": percentile(0.95), "p99_ms": percentile(0.99),
    }


def hostile_uploads() -> list[tuple[str, bytes]]:
    """Small files that each try to cost the server: bombs, truncation, wrong types, blank images."""
    import cv2
    import numpy as np

    sys.path.insert(0, str(REPO))
    from tests.conftest import png_with_size

    blank = cv2.imencode(".png", np.zeros((2000, 2000), np.uint8))[1].tobytes()
    return [("bomb.png", png_with_size(10_000, 10_000, bit_depth=16, colour_type=6)),
            ("huge.png", png_with_size(60_000, 60_000)), ("blank.png", blank),
            ("notes.jpeg", b"not an image at all"), ("cut.jpeg", b"\xff\xd8\xff\xe0" + b"\x00" * 500)]


def peak_rss_mb(pid: int) -> float:
    """The high-water mark of a process's resident memory (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(model: str, backend: str) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "pneumo.cli", "serve", "--model", model, "--port", str(port),
                                "--backend", backend], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.3)
    process.kill()
    raise RuntimeError(f"server did not start: {process.stderr.read().decode()[-2000:]}")


def batch_throughput(model: str, backend: str, files: list[Path], repeats: int = 3) -> float:
    """Images per second of Predictor.predict_files over the same files (decode + resize + model), best of a few."""
    from pneumo.predict import Predictor

    predictor = Predictor(model, backend=backend)
    names = [str(f) for f in files]
    predictor.predict_files(names[:8])  # warm-up
    best = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        predictor.predict_files(names)
        best = max(best, len(names) / (time.perf_counter() - started))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(REPO / "models" / "pneumo-mobilenet"))
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--images", default=os.environ.get("PNEUMO_DATA", "../shared/datasets/chest_xray") + "/train/NORMAL")
    args = parser.parse_args()
    files = sorted(Path(args.images).glob("*.jpeg"))[:100]
    if not files:
        sys.exit(f"no JPEG images in {args.images}")
    from pneumo.predict import Predictor

    backend = Predictor(args.model, backend=args.backend).backend
    batch = batch_throughput(args.model, backend, files)
    print(f"model {args.model}, backend {backend}, {os.cpu_count()} CPU cores")
    print(f"predict (batch over {len(files)} files): {batch:.1f} images/s")
    process, url = start_server(args.model, args.backend)
    try:
        images = [f.read_bytes() for f in files]
        run_load(url, images, requests=32, concurrency=8)  # warm-up
        print("clients | throughput (req/s) | ratio to predict | p50 ms | p95 ms | p99 ms | errors")
        for clients in (1, 8, 16):
            result = run_load(url, images, requests=args.requests, concurrency=clients)
            print(f"{clients:>7} | {result['throughput_rps']:>18} | {result['throughput_rps'] / batch:>16.2f} | "
                  f"{result['p50_ms']:>6} | {result['p95_ms']:>6} | {result['p99_ms']:>6} | {result['errors']}")
        mixed = run_load(url, images, requests=args.requests, concurrency=8, bad=hostile_uploads())
        print(f"with hostile uploads (1 in 4), 8 clients: {mixed['throughput_rps']} req/s, good requests p95 "
              f"{mixed['p95_ms']} ms, errors on good requests {mixed['errors']}, hostile not refused "
              f"{mixed['hostile_not_refused']}")
        print(f"server peak RSS: {peak_rss_mb(process.pid):.0f} MB")
    finally:
        process.terminate()
        process.wait(timeout=10)


if __name__ == "__main__":
    main()
