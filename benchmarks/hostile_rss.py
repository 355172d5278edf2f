"""What each hostile upload costs a running server: its memory growth, its status, and whether the server answers
afterwards.

    python benchmarks/hostile_rss.py [--model pneumo-ensemble] [--json out.json]

Starts ``pneumo serve`` on loopback, warms it with ordinary X-rays, then sends every file of the hostile corpus
(tests/serving/test_hostile.py: bombs, lying headers, odd DICOM, parsing bombs) one at a time, each twice at once.
For each: the status codes, the server's resident memory sampled every 5 ms while it is handled (growth of the
peak over the warm baseline) and after (what was kept), and a /healthz plus one X-ray classified afterwards.
Targets: < 200 MB growth each, no 5xx, the server answering after every one.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from serve_load import start_server  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def sampled_peak(pid: int, work) -> tuple[object, float]:
    """Run ``work()`` while sampling the process's RSS every 5 ms: (its result, the highest RSS seen)."""
    peak, done = [rss_mb(pid)], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak.append(rss_mb(pid))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = work()
    finally:
        done.set()
        sampler.join()
    return result, max(peak)


def corpus() -> list[tuple[str, bytes]]:
    from tests.serving.test_hostile import BOMBS, REFUSED

    skipped = ("oversized", "huge-body")  # the body limit's own cases: cut off before any decoding
    return [(name, payload()) for name, payload, _, _ in REFUSED + BOMBS if not name.startswith(skipped)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="pneumo-ensemble")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from tests.conftest import jpeg_bytes, xray_like

    xray = jpeg_bytes(xray_like(1, 512))
    process, url = start_server(args.model, "auto")
    rows = []
    try:
        with httpx.Client(timeout=120) as client:
            for _ in range(10):  # warm: model, allocator and decoder buffers as in service
                assert client.post(f"{url}/v1/predict", files={"file": ("x.jpeg", xray)}).status_code == 200
            baseline = rss_mb(process.pid)
            for name, payload in corpus():
                def attack():
                    with ThreadPoolExecutor(2) as pool:  # twice at once: both decoder slots
                        return list(pool.map(lambda _: httpx.post(f"{url}/v1/predict", files={"file": (name, payload)},
                                                                  timeout=120).status_code, range(2)))

                started = time.perf_counter()
                codes, peak = sampled_peak(process.pid, attack)
                seconds = time.perf_counter() - started
                kept = rss_mb(process.pid)
                alive = (client.get(f"{url}/healthz").status_code == 200
                         and client.post(f"{url}/v1/predict", files={"file": ("x.jpeg", xray)}).status_code == 200)
                rows.append({"file": name, "bytes": len(payload), "status": codes, "seconds": round(seconds, 2),
                             "peak_growth_mb": round(peak - baseline, 1), "kept_growth_mb": round(kept - baseline, 1),
                             "answering_after": alive})
                print(json.dumps(rows[-1]), flush=True)
    finally:
        process.terminate()
        process.wait(timeout=30)
    summary = {"model": args.model, "baseline_rss_mb": round(baseline, 1), "attacks": len(rows),
               "worst_peak_growth_mb": max(r["peak_growth_mb"] for r in rows),
               "worst_kept_growth_mb": max(r["kept_growth_mb"] for r in rows),
               "server_errors": sum(code >= 500 for r in rows for code in r["status"]),
               "not_answering_after": sum(not r["answering_after"] for r in rows), "rows": rows}
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
