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
from pneumo.errors import ModelFileError, PneumoError
from pneumo.files import atomic_path
from pneumo.inference import predict_logits, softmax
from pneumo.labels import CLASSES
from pneumo.models.bundle import load_bundle
from pneumo.paths import resolve_model

__all__ = ["LABELS_SUFFIX", "is_labels_file", "read_teacher_labels", "teacher_probabilities", "write_teacher_labels"]

LABELS_SUFFIX = ".npz"  # how a recipe tells a teacher's labels file from a model


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
        ModelFileError: the teacher is missing or not a pneumo model (or labels file).
        PneumoError: the teacher's data (or labels file) lacks some of the student's images.
    """
    if is_labels_file(teacher):
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


def is_labels_file(teacher: str | Path) -> bool:
    """Whether ``teacher`` names a teacher's labels file (``.npz``) rather than a model."""
    return Path(teacher).suffix.lower() == LABELS_SUFFIX and not Path(teacher).is_dir()


def write_teacher_labels(path: Path, probabilities: np.ndarray, sha256: np.ndarray, description: dict) -> None:
    """Save a teacher's probabilities on some images, by the images' content.

    Args:
        path: the labels file to write (``.npz``); replaced whole, never left half-written.
        probabilities: (N, K) the teacher's temperature-scaled probabilities, K = len(CLASSES).
        sha256: (N,) the images' content hashes, in the rows' order.
        description: the teacher's id, weights_sha256 and temperature (``teacher_probabilities`` gives it).
    """
    with atomic_path(Path(path)) as temporary, open(temporary, "wb") as handle:
        np.savez_compressed(handle, probabilities=probabilities.astype(np.float32),
                            sha256=np.asarray(sha256, dtype="S64"), classes=np.asarray(CLASSES),
                            teacher=json.dumps(description))


def read_teacher_labels(path: Path, sha256: np.ndarray) -> tuple[np.ndarray, dict]:
    """The probabilities a labels file holds for some images, in their order.

    Args:
        path: a file written by ``write_teacher_labels``.
        sha256: the content hashes of the images to label.

    Returns:
        (len(sha256), K) probabilities, and the teacher's description with the file's name and sha256 added.

    Raises:
        ModelFileError: the file is missing, is not a teacher's labels file for these classes, or lacks some
            of the images.
    """
    path = Path(path)
    again = "write it again with scripts/teacher_labels.py"
    if not path.is_file():
        raise ModelFileError(f"{path}: no such teacher's labels file; write one with scripts/teacher_labels.py")
    try:
        with np.load(path, allow_pickle=False) as saved:
            probabilities, known = saved["probabilities"], saved["sha256"].astype(str)
            classes, description = tuple(saved["classes"].astype(str)), json.loads(str(saved["teacher"]))
    except (OSError, ValueError, KeyError) as error:
        raise ModelFileError(f"{path}: not a teacher's labels file ({type(error).__name__}: {error}); "
                             f"{again}") from None
    described = description if isinstance(description, dict) else {}
    missing_keys = sorted({"id", "weights_sha256", "temperature"} - set(described))
    if missing_keys:
        raise ModelFileError(f"{path}: its teacher's description lacks {', '.join(missing_keys)}; {again}")
    if classes != CLASSES or probabilities.shape != (len(known), len(CLASSES)):
        raise ModelFileError(f"{path}: holds {probabilities.shape} probabilities over {classes} for {len(known)} "
                             f"images; a student needs one row per image over {CLASSES}; {again}")
    if not (np.isfinite(probabilities).all() and np.allclose(probabilities.sum(axis=1), 1, atol=1e-3)
            and (probabilities >= 0).all()):
        raise ModelFileError(f"{path}: holds rows that are not probabilities (negative, not finite, or not "
                             f"summing to 1); {again}")
    rows = {sha: row for row, sha in enumerate(known)}
    missing = sum(sha not in rows for sha in sha256)
    if missing:
        raise ModelFileError(f"{path}: lacks {missing} of the {len(sha256)} training images (labelled for other "
                             f"data or another split); {again} for this data")
    description = {**description, "images": int(len(sha256)), "labels_file": path.name,
                   "labels_sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    return probabilities[[rows[sha] for sha in sha256]], description
