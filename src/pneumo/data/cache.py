"""Preprocessing cache: every image decoded, made grayscale and resized once, kept as uint8.

The cache holds pixels and nothing else that a user can edit. A cache folder
``<cache_dir>/size<S>/`` holds ``images.npy`` (N x S x S uint8, memory-mapped when loaded),
``index.csv`` (the sha256 of the file each row was decoded from) and ``key.json`` (the
preprocessing settings, the decoders' versions and the sha256 of ``images.npy`` itself). Labels,
patients, roles and paths are never read from it: they come fresh from their source (manifest,
labels CSV, folders) on every run, so an edited label or split is seen at once. A changed file is
a new content hash and is decoded again (the hash is taken from the file's bytes for labels CSVs,
class folders and the archive layout; an organized folder's manifest records them, so run
``pneumo organize`` again after editing its images); a cache written by other settings or
decoders, or one whose files were damaged, is rebuilt. Rescaling by 1/255 happens when batches are made.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pydicom

from pneumo.data.archive import Problem, Record, load_records
from pneumo.data.readers import load_for_model
from pneumo.errors import DataLayoutError, ImageReadError
from pneumo.files import atomic_path, atomic_write

logger = logging.getLogger(__name__)

#: Bump when the preprocessing itself changes, so that old caches are rebuilt.
PREPROCESSING_VERSION = 3  # 3: the cache holds pixels only, checked by their hash; 2: DICOM by its window or VOI LUT


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

    @classmethod
    def of_records(cls, records: Sequence[Record], images: np.ndarray) -> "PreparedData":
        """``images`` (one per record, in order) with the records' labels, patients, roles, paths and hashes."""
        return cls(images=images,
                   labels=np.array([r.label for r in records], np.int64),
                   patients=np.array([r.patient for r in records], dtype=str),
                   splits=np.array([r.split for r in records], dtype=str),
                   paths=np.array([r.path for r in records], dtype=str),
                   sha256=np.array([r.sha256 for r in records], dtype=str))


@dataclass(frozen=True)
class PrepareResult:
    data: PreparedData
    problems: list[Problem]
    decoded: int
    reused: int
    folder: Path


@dataclass(frozen=True)
class CachedPixels:
    """What a cache folder holds: decoded images (N, S, S) and the content hash of the file of each."""

    images: np.ndarray
    sha256: list[str]

    def rows(self) -> dict[str, int]:
        return {sha: row for row, sha in enumerate(self.sha256)}


def _decode(job: tuple[str, int]) -> np.ndarray | str:
    path, size = job
    try:
        return load_for_model(path, size)
    except ImageReadError as error:
        return error.reason


def _settings(size: int) -> dict:
    """Everything besides a file's bytes that decides its cached pixels."""
    return {"version": PREPROCESSING_VERSION, "size": size, "grayscale": True, "resize": "cv2 INTER_AREA, no aspect",
            "opencv": cv2.__version__, "pydicom": pydicom.__version__}


def _file_sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def load_cache(folder: Path, size: int) -> CachedPixels | None:
    """The pixels cached in ``folder`` for ``size``, memory-mapped; None when there are none, when they were
    made by other settings or decoders, or when a file is incomplete or damaged (its hash differs)."""
    try:
        key = json.loads((folder / "key.json").read_text())
        if key.get("settings") != _settings(size):
            return None
        with (folder / "index.csv").open(newline="") as handle:
            hashes = [row["sha256"] for row in csv.DictReader(handle)]
        if _file_sha256(folder / "images.npy") != key.get("images_sha256"):
            logger.warning("%s: the cached images do not match their recorded hash; decoding again", folder)
            return None
        images = np.load(folder / "images.npy", mmap_mode="r")
    except (OSError, KeyError, ValueError, json.JSONDecodeError):
        return None
    if len(hashes) != len(images) or images.shape[1:] != (size, size) or images.dtype != np.uint8:
        return None
    return CachedPixels(images, hashes)


def prepare(
    records: Sequence[Record],
    root: Path,
    *,
    size: int = 128,
    cache_dir: Path = Path("cache"),
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PrepareResult:
    """Decode, grayscale and resize every record into the cache, reusing the pixels already there.

    Args:
        records: images to prepare (from ``load_records``); paths are relative to ``root``.
        root: the data folder the record paths are relative to.
        size: output side in pixels (the study used 128).
        cache_dir: where ``size<S>/`` is kept.
        workers: decoding processes (default: all cores).
        progress: called with (done, total) as images are decoded.

    Returns:
        The prepared data (labels, patients and roles as the records give them now), per-file problems
        (file and reason), and how many images were decoded versus reused.
    """
    if size < 16 or size > 1024:
        raise ValueError(f"The 'size' of prepare must be between 16 and 1024 pixels. Got {size} instead.")
    folder = Path(cache_dir) / f"size{size}"
    old = load_cache(folder, size)
    old_rows = old.rows() if old is not None else {}
    if old is not None and old.sha256 == [record.sha256 for record in records]:
        return PrepareResult(PreparedData.of_records(records, old.images), [], decoded=0, reused=len(records),
                             folder=folder)

    wanted = [(record, str(Path(root) / record.path)) for record in records]
    to_decode = list(dict.fromkeys((path, size) for record, path in wanted if record.sha256 not in old_rows))
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
    _write(folder, stack, [record.sha256 for record in kept], _settings(size))
    cached = load_cache(folder, size)
    if cached is None:
        raise DataLayoutError(f"{folder}: the preprocessing cache could not be read back after writing it; check "
                              "that the disk is not full, or pass another --cache-dir")
    reused = sum(record.sha256 in old_rows for record in kept)
    return PrepareResult(PreparedData.of_records(kept, cached.images), problems, decoded=len(to_decode),
                         reused=reused, folder=folder)


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


def _write(folder: Path, images: np.ndarray, hashes: Sequence[str], settings: dict) -> None:
    """Write the cache; key.json goes last, so a killed run leaves a cache that is rebuilt."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "key.json").unlink(missing_ok=True)
    with atomic_path(folder / "images.npy") as temporary, open(temporary, "wb") as handle:
        np.save(handle, images)
    with atomic_path(folder / "index.csv") as temporary, temporary.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sha256"])
        writer.writerows([sha] for sha in hashes)
    atomic_write(folder / "key.json", json.dumps(
        {"settings": settings, "rows": len(hashes), "images_sha256": _file_sha256(folder / "images.npy")}, indent=1))


def prepare_folder(
    data: Path, *, size: int = 128, cache_dir: Path = Path("cache"), progress: Callable[[int, int], None] | None = None
) -> PrepareResult:
    """Prepare a data folder (organized with a manifest, or the archive layout) into the cache.

    Each data folder gets its own cache subfolder, named after it and a hash of its path.

    Raises:
        DataLayoutError: no such folder, or one in no layout pneumo reads.
    """
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
