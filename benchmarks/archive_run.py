"""An archive-scale run on a synthetic PACS export: throughput, peak memory, resuming after kill -9, Ray, store size.

    python benchmarks/archive_run.py --files 20000 --model pneumo-mobilenet [--ray-files 2000] [--json out.json]

The archive mixes extensionless DICOM files (as PACS exports name them), JPEG, PNG and junk, in nested folders.
Measured, each in a fresh process:
  1. plain ``pneumo predict ARCHIVE --out store.parquet``: images/s and the process's peak RSS (the same
     figure for the small subset of step 3 shows whether memory grows with the archive);
  2. the same into a new store, killed (SIGKILL) after its first parts, then rerun: no file lost or doubled;
  3. on the first ``--ray-files`` files: plain predict, and ``--engine ray`` with 1 and 2 workers (a local Ray);
  4. the store's size per 10,000 images.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_archive(root: Path, count: int) -> dict[str, int]:
    """``count`` files under root/STUDYn/SERIESm/: 40% extensionless DICOM, 30% JPEG, 20% PNG, 10% junk."""
    import pydicom
    from pydicom.uid import generate_uid

    from tests.conftest import dicom_bytes, xray_like

    rng = np.random.default_rng(0)
    kinds = {"dicom": 0, "jpeg": 0, "png": 0, "junk": 0}
    templates = [xray_like(seed, 256) for seed in range(64)]
    base = pydicom.dcmread(io.BytesIO(dicom_bytes((templates[0].astype(np.uint16) * 16))))
    for number in range(count):
        folder = root / f"STUDY{number // 500:04d}" / f"SERIES{number // 50 % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        image = np.clip(templates[number % 64].astype(int) + rng.integers(-6, 7, (256, 256)), 0, 255).astype(np.uint8)
        roll = number % 10
        if roll < 4:
            base.PixelData = (image.astype(np.uint16) * 16).tobytes()
            base.Rows, base.Columns = image.shape
            base.SOPInstanceUID = base.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            base.StudyInstanceUID, base.SeriesInstanceUID = f"1.2.3.{number // 500}", f"1.2.3.{number // 500}.{number // 50}"
            base.PatientID = f"P{number // 500:05d}"
            base.save_as(folder / f"IM{number:06d}", enforce_file_format=True)
            kinds["dicom"] += 1
        elif roll < 7:
            cv2.imwrite(str(folder / f"IM{number:06d}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
            kinds["jpeg"] += 1
        elif roll < 9:
            cv2.imwrite(str(folder / f"IM{number:06d}.png"), image)
            kinds["png"] += 1
        else:
            (folder / f"NOTE{number:06d}.txt").write_text("not an image\n")
            kinds["junk"] += 1
    return kinds


def predict(archive: Path, store: Path, model: str, *flags: str, kill_after_parts: int = 0) -> dict:
    """Run ``pneumo predict`` in a child process: its wall time and its own peak RSS (MB); killed after some parts
    of the store are written if asked."""
    command = [sys.executable, "-m", "pneumo.cli", "predict", "--model", model, str(archive), "--out", str(store),
               *flags]
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, text=True)
        if kill_after_parts:
            while len(list(store.glob("part-*.parquet"))) < kill_after_parts and process.poll() is None:
                time.sleep(0.05)
            os.kill(process.pid, signal.SIGKILL)
        _, status, usage = os.wait4(process.pid, 0)  # this child's own resource use, peak RSS included
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        return {"seconds": round(seconds, 1), "returncode": os.waitstatus_to_exitcode(status),
                "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "stdout": out.read()[-400:], "stderr": err.read()[-400:]}


def stored(store: Path) -> tuple[int, int]:
    import pyarrow.parquet as pq

    table = pq.ParquetDataset(sorted(str(p) for p in store.glob("part-*.parquet"))).read(columns=["content_sha256"])
    hashes = table["content_sha256"].to_pylist()
    return len(hashes), len(set(hashes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=20000)
    parser.add_argument("--ray-files", type=int, default=2000)
    parser.add_argument("--model", default="pneumo-mobilenet")
    parser.add_argument("--work", type=Path, default=Path("/tmp/pneumo-archive-bench"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    work = args.work
    archive = work / "archive"
    if not archive.is_dir():
        kinds = make_archive(archive, args.files)
    else:
        kinds = {"reused": sum(1 for _ in archive.rglob("*") if _.is_file())}
    images = sum(1 for p in archive.rglob("*") if p.is_file() and not p.name.startswith("NOTE"))
    result = {"files": args.files, "kinds": kinds, "images": images, "model": args.model, "machine": os.cpu_count()}

    plain = predict(archive, work / "plain.parquet", args.model)
    rows, distinct = stored(work / "plain.parquet")
    result["plain"] = {**{k: plain[k] for k in ("seconds", "returncode", "peak_rss_mb")},
                       "images_per_s": round(images / plain["seconds"], 1), "rows": rows, "distinct": distinct}
    size = sum(p.stat().st_size for p in (work / "plain.parquet").glob("part-*.parquet"))
    result["store_mb_per_10k_images"] = round(size / 1e6 / rows * 10_000, 2)

    killed = predict(archive, work / "killed.parquet", args.model, kill_after_parts=5)
    partial = stored(work / "killed.parquet")
    resumed = predict(archive, work / "killed.parquet", args.model)
    rows, distinct = stored(work / "killed.parquet")
    result["kill_and_resume"] = {"killed_exit": killed["returncode"], "rows_when_killed": partial[0], "resumed_seconds": resumed["seconds"],
                                 "rows": rows, "distinct": distinct, "lost": images - distinct,
                                 "doubled": rows - distinct}

    subset = work / "subset"
    if not subset.is_dir():
        subset.mkdir()
        for number, path in enumerate(sorted(p for p in archive.rglob("*") if p.is_file())[:args.ray_files]):
            (subset / f"{number:06d}-{path.name}").symlink_to(path)
    subset_images = sum(1 for p in subset.iterdir() if not p.name.split("-", 1)[1].startswith("NOTE"))
    ray = {"files": args.ray_files, "images": subset_images}
    for label, flags in (("plain", ()), ("ray_1_worker", ("--engine", "ray", "--workers", "1")),
                         ("ray_2_workers", ("--engine", "ray", "--workers", "2"))):
        run = predict(subset, work / f"subset-{label}.parquet", args.model, *flags)
        ray[label] = {"seconds": run["seconds"], "images_per_s": round(subset_images / run["seconds"], 1),
                      "peak_rss_mb": run["peak_rss_mb"], "rows": stored(work / f"subset-{label}.parquet")[0]}
    result["ray"] = ray
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
