"""The teacher's side of knowledge distillation: its calibrated probabilities on the training images.

A teacher (any pneumo model, an ensemble included) sees each image once, unaugmented, at its own
input size; its temperature-scaled probabilities are cached under the preprocessing cache, keyed by
the teacher's weights and the images' contents, so that every seed of a student reuses them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from pneumo.data.cache import PreparedData, prepare_folder
from pneumo.errors import PneumoError
from pneumo.files import atomic_path
from pneumo.inference import predict_logits, softmax
from pneumo.models.bundle import load_bundle
from pneumo.paths import resolve_model

__all__ = ["teacher_probabilities"]


def teacher_probabilities(teacher: str | Path, data: PreparedData, indices: np.ndarray, *, data_path: Path,
                          cache_dir: Path) -> tuple[np.ndarray, dict]:
    """The teacher's calibrated probabilities (len(indices), K) for ``data``'s images at ``indices``.

    Args:
        teacher: a shipped model's name, a run folder or a bundle file.
        data: the student's prepared data; ``indices`` pick the images to label.
        data_path: the data source ``data`` was prepared from (for the teacher's own input size).
        cache_dir: the preprocessing cache; the probabilities are kept in its ``teacher/`` folder.

    Returns:
        The probabilities, and a description of the teacher (id, weights hash, temperature) for the run.

    Raises:
        PneumoError: the teacher's data lacks some of the student's images.
    """
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
