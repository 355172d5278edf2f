"""Preprocessing cache: every image decoded, made grayscale and resized once, kept as uint8.

A cache folder ``<cache_dir>/size<S>/`` holds ``images.npy`` (N x S x S uint8, memory-mapped
when loaded), ``index.csv`` (path, split, label, patient, sha256 per row) and ``key.json``
(the settings). A second run with the same settings and files only reads these; a changed
file or setting re-decodes only what changed. Rescaling by 1/255 happens when batches are made.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pneumo.data.archive import Problem, Record
from pneumo.data.readers import load_for_model
from pneumo.errors import DataLayoutError, ImageReadError
from pneumo.files import atomic_path, atomic_write

#: Bump when the preprocessing itself changes, so that old caches are rebuilt.
PREPROCESSING_VERSION = 2  # 2: DICOM shown by its window or VOI LUT, 8-bit values as stored
INDEX_FIELDS = ("path", "split", "label", "patient", "sha256")


@dataclass(frozen=True)
class PreparedData:
    """The prepared dataset: one row per image, in the order of ``images``."""

    images: np.ndarray  # (N, S, S) uint8
    labels: np.ndarray  # (N,) int64 class indices
    patients: np.ndarray  # (N,) str
    splits: np.ndarray  # (N,) str: the archive split each image came from
    paths: np.ndarray  # (N,) str, relative to the data root
    sha256: np.ndarray  # (N,) str

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: np.ndarray) -> "PreparedData":
        return PreparedData(*(np.asarray(field)[indices] for field in
                              (self.images, self.labels, self.patients, self.splits, self.paths, self.sha256)))


@dataclass(frozen=True)
class PrepareResult:
    data: PreparedData
    problems: list[Problem]
    decoded: int
    reused: int
    folder: Path


def _decode(job: tuple[str, int]) -> np.ndarray | str:
    path, size = job
    try:
        return load_for_model(path, size)
    except ImageReadError as error:
        return error.reason


def _settings(size: int) -> dict:
    return {"version": PREPROCESSING_VERSION, "size": size, "grayscale": True, "resize": "cv2 INTER_AREA, no aspect"}


def load_cache(folder: Path) -> PreparedData | None:
    """The cache in ``folder``, memory-mapped, or None when it is missing or incomplete."""
    try:
        key = json.loads((folder / "key.json").read_text())
        with (folder / "index.csv").open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        images = np.load(folder / "images.npy", mmap_mode="r")
    except (FileNotFoundError, ValueError, json.JSONDecodeError):
        return None
    if len(rows) != len(images) or key.get("rows") != len(rows):
        return None
    return PreparedData(
        images=images,
        labels=np.array([int(r["label"]) for r in rows], np.int64),
        patients=np.array([r["patient"] for r in rows]),
        splits=np.array([r["split"] for r in rows]),
        paths=np.array([r["path"] for r in rows]),
        sha256=np.array([r["sha256"] for r in rows]),
    )


def prepare(
    records: Sequence[Record],
    root: Path,
    *,
    size: int = 128,
    cache_dir: Path = Path("cache"),
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PrepareResult:
    """Decode, grayscale and resize every record into the cache, reusing what is already there.

    Args:
        records: images to prepare (from ``load_records``); paths are relative to ``root``.
        root: the data folder the record paths are relative to.
        size: output side in pixels (the study used 128).
        cache_dir: where ``size<S>/`` is kept.
        workers: decoding processes (default: all cores).
        progress: called with (done, total) as images are decoded.

    Returns:
        The prepared data, per-file problems (file and reason), and how many images were
        decoded versus reused.
    """
    if size < 16 or size > 1024:
        raise ValueError(f"The 'size' of prepare must be between 16 and 1024 pixels. Got {size} instead.")
    folder = Path(cache_dir) / f"size{size}"
    settings = _settings(size)
    old = None
    key_path = folder / "key.json"
    if key_path.exists() and json.loads(key_path.read_text()).get("settings") == settings:
        old = load_cache(folder)
    old_rows = {sha: row for row, sha in enumerate(old.sha256)} if old is not None else {}
    wanted = [(record, str(Path(root) / record.path)) for record in records]
    if old is not None and len(old) == len(records) and all(
        record.sha256 == sha and record.path == path for record, sha, path in zip(records, old.sha256, old.paths)
    ):
        return PrepareResult(old, [], decoded=0, reused=len(records), folder=folder)

    to_decode = [(path, size) for record, path in wanted if record.sha256 not in old_rows]
    decoded = dict(zip((path for path, _ in to_decode), _decode_all(to_decode, workers, progress)))

    problems: list[Problem] = []
    kept: list[Record] = []
    images: list[np.ndarray] = []
    for record, path in wanted:
        if record.sha256 in old_rows:
            image = old.images[old_rows[record.sha256]]
        else:
            image = decoded[path]
            if isinstance(image, str):
                problems.append(Problem(path, image))
                continue
        kept.append(record)
        images.append(image)
    stack = np.stack(images) if images else np.zeros((0, size, size), np.uint8)
    _write(folder, stack, kept, settings)
    data = load_cache(folder)
    reused = sum(record.sha256 in old_rows for record in kept)
    return PrepareResult(data, problems, decoded=len(to_decode), reused=reused, folder=folder)


def _decode_all(
    jobs: list[tuple[str, int]], workers: int | None, progress: Callable[[int, int], None] | None
) -> list[np.ndarray | str]:
    """Decode jobs in worker processes (in-process for a few); an error becomes its reason."""
    workers = workers or os.cpu_count() or 1
    results: list[np.ndarray | str] = []
    if workers == 1 or len(jobs) < 64:
        iterator = map(_decode, jobs)
        pool = None
    else:
        pool = ProcessPoolExecutor(workers)
        iterator = pool.map(_decode, jobs, chunksize=max(1, len(jobs) // (workers * 16)))
    try:
        for result in iterator:
            results.append(result)
            if progress:
                progress(len(results), len(jobs))
    finally:
        if pool is not None:
            pool.shutdown()
    return results


def _write(folder: Path, images: np.ndarray, records: Sequence[Record], settings: dict) -> None:
    """Write the cache; key.json goes last, so a killed run leaves a cache that is rebuilt."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "key.json").unlink(missing_ok=True)
    with atomic_path(folder / "images.npy") as temporary, open(temporary, "wb") as handle:
        np.save(handle, images)
    with atomic_path(folder / "index.csv") as temporary, temporary.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(INDEX_FIELDS)
        writer.writerows((r.path, r.split, r.label, r.patient, r.sha256) for r in records)
    atomic_write(folder / "key.json", json.dumps({"settings": settings, "rows": len(records)}, indent=1))


def prepare_folder(
    data: Path, *, size: int = 128, cache_dir: Path = Path("cache"), progress: Callable[[int, int], None] | None = None
) -> PrepareResult:
    """Prepare a data folder (organized with a manifest, or the archive layout) into the cache.

    Each data folder gets its own cache subfolder, named after it and a hash of its path.

    Raises:
        DataLayoutError: no such folder, or one in no layout pneumo reads.
    """
    from pneumo.data.archive import load_records

    data = Path(data)
    if not data.exists():
        raise DataLayoutError(f"{data}: no such data folder; check --data or $PNEUMO_DATA (to get the archive, "
                              "download it from doi:10.17632/rscbjbr9sj.2 and run 'pneumo organize')")
    records, problems = load_records(data, progress)
    root = data.parent if data.is_file() else data
    tag = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:8]
    result = prepare(records, root, size=size, cache_dir=Path(cache_dir) / f"{root.resolve().name}-{tag}",
                     progress=progress)
    return PrepareResult(result.data, problems + result.problems, result.decoded, result.reused, result.folder)
