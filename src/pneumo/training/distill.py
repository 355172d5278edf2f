"""The teacher's side of knowledge distillation: its calibrated probabilities on the training images.

A teacher (any pneumo model, an ensemble included) sees each image once, unaugmented, at its own
input size; its temperature-scaled probabilities are cached under the preprocessing cache, keyed by
the teacher's weights and the images' contents, so that every seed of a student reuses them.

A teacher's labels file (``write_teacher_labels``) holds those probabilities by image content, with the
teacher's description: it teaches like the teacher itself without its weights, so a teacher trained
where compute is plentiful, or in an earlier session, can teach anywhere.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from pneumo.data.cache import PreparedData, prepare_folder
from pneumo.errors import PneumoError
from pneumo.files import atomic_path
from pneumo.inference import predict_logits, softmax
from pneumo.models.bundle import load_bundle
from pneumo.paths import resolve_model

__all__ = ["LABELS_SUFFIX", "read_teacher_labels", "teacher_probabilities", "write_teacher_labels"]

LABELS_SUFFIX = ".npz"


def teacher_probabilities(teacher: str | Path, data: PreparedData, indices: np.ndarray, *, data_path: Path,
                          cache_dir: Path) -> tuple[np.ndarray, dict]:
    """The teacher's calibrated probabilities (len(indices), K) for ``data``'s images at ``indices``.

    Args:
        teacher: a shipped model's name, a run folder, a bundle file or a teacher's labels file (.npz).
        data: the student's prepared data; ``indices`` pick the images to label.
        data_path: the data source ``data`` was prepared from (for the teacher's own input size).
        cache_dir: the preprocessing cache; the probabilities are kept in its ``teacher/`` folder.

    Returns:
        The probabilities, and a description of the teacher (id, weights hash, temperature) for the run.

    Raises:
        PneumoError: the teacher's data (or labels file) lacks some of the student's images.
    """
    if Path(teacher).suffix == LABELS_SUFFIX:
        return read_teacher_labels(Path(teacher), data.sha256[indices])
    bundle = load_bundle(resolve_model(teacher))
    shas = data.sha256[indices]
    key = hashlib.sha256("|".join([bundle.metadata["weights_sha256"], str(bundle.temperature), *shas]).encode())
    target = Path(cache_dir) / "teacher" / f"{bundle.model_id}-{key.hexdigest()[:16]}.npy"
    description = {"id": bundle.model_id, "weights_sha256": bundle.metadata["weights_sha256"],
                   "temperature": bundle.temperature, "images": int(len(indices))}
    if target.is_file():
        return np.load(target), description
    if bundle.size == data.size:
        images = data.images[indices]
    else:  # the teacher takes another input size: the same files, prepared at its size
        own = prepare_folder(data_path, size=bundle.size, cache_dir=cache_dir).data
        rows = {sha: row for row, sha in enumerate(own.sha256)}
        missing = [sha for sha in shas if sha not in rows]
        if missing:
            raise PneumoError(f"the teacher's {bundle.size}-pixel copy of {data_path} lacks {len(missing)} of the "
                              "training images; prepare the data again")
        images = own.images[[rows[sha] for sha in shas]]
    probabilities = softmax(predict_logits(bundle.model, images), bundle.temperature).astype(np.float32)
    with atomic_path(target) as temporary, open(temporary, "wb") as handle:
        np.save(handle, probabilities)
    return probabilities, description


def write_teacher_labels(path: Path, probabilities: np.ndarray, sha256: np.ndarray, description: dict) -> None:
    """Save a teacher's probabilities (N, K) on the images with these content hashes, with its description."""
    with atomic_path(Path(path)) as temporary, open(temporary, "wb") as handle:
        np.savez_compressed(handle, probabilities=probabilities.astype(np.float32),
                            sha256=np.asarray(sha256, dtype="S64"), teacher=json.dumps(description))


def read_teacher_labels(path: Path, sha256: np.ndarray) -> tuple[np.ndarray, dict]:
    """The probabilities a labels file holds for the images with these content hashes, in their order.

    Returns:
        The probabilities, and the teacher's description with the file's name and sha256 added.

    Raises:
        PneumoError: the file is not a teacher's labels file, or lacks some of the images.
    """
    try:
        with np.load(path, allow_pickle=False) as saved:
            probabilities, known = saved["probabilities"], saved["sha256"]
            description = json.loads(str(saved["teacher"]))
    except (OSError, ValueError, KeyError) as error:
        raise PneumoError(f"{path}: not a teacher's labels file ({type(error).__name__}: {error}); write one with "
                          "scripts/teacher_labels.py") from None
    rows = {sha.decode(): row for row, sha in enumerate(known)}
    missing = sum(sha not in rows for sha in sha256)
    if missing:
        raise PneumoError(f"{path}: lacks {missing} of the {len(sha256)} training images (labelled for other data or "
                          "another split); write it again for this data")
    description = {**description, "images": int(len(sha256)), "labels_file": Path(path).name,
                   "labels_sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()}
    return probabilities[[rows[sha] for sha in sha256]], description
