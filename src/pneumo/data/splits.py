"""Train/validation/test splits that keep every patient on one side.

The study split images at random, which puts images of one patient on both sides and
inflates validation scores; ``grouped`` (the default) splits by patient, stratified by class.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from pneumo.data.cache import PreparedData
from pneumo.errors import DataLayoutError
from pneumo.files import atomic_path
from pneumo.labels import CLASSES

SPLIT_METHODS = ("grouped", "random")
ROLES = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    """Which role (train, val, test) each prepared image plays."""

    roles: np.ndarray  # (N,) str, one of ROLES
    method: str
    seed: int

    def indices(self, role: str) -> np.ndarray:
        return np.flatnonzero(self.roles == role)

    def counts(self, labels: np.ndarray) -> dict[str, list[int]]:
        """Images per role and class."""
        return {role: np.bincount(labels[self.roles == role], minlength=len(CLASSES)).tolist() for role in ROLES}

    def patient_overlap(self, patients: np.ndarray) -> dict[str, int]:
        """Patients found in more than one role, per pair of roles."""
        sets = {role: set(patients[self.roles == role]) for role in ROLES}
        return {f"{a}/{b}": len(sets[a] & sets[b]) for a, b in (("train", "val"), ("train", "test"), ("val", "test"))}


def _grouped_fold(labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of about ``fraction`` of the images, whole patients only, class-stratified."""
    n_splits = max(2, int(1 / fraction + 1e-9))  # rounds down, so at least `fraction` is held out
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    _, held = next(folds.split(np.zeros(len(labels)), labels, groups))
    mask = np.zeros(len(labels), bool)
    mask[held] = True
    return mask


def make_split(
    data: PreparedData, *, method: str = "grouped", val_fraction: float = 0.2, holdout: float = 0.0, seed: int = 42
) -> Split:
    """Assign train/val/test roles to the prepared images.

    The archive's ``test`` images are the test set when present. Without them,
    ``holdout`` > 0 carves a patient-grouped internal test set out of ``train`` first.
    The archive's tiny ``val`` folder (16 images) is not used for validation: like the
    study, validation is ``val_fraction`` of the remaining training images.

    Raises:
        ValueError: an unknown method or a fraction outside (0, 0.5].
    """
    if method not in SPLIT_METHODS:
        raise ValueError(f"The 'method' of make_split must be one of {SPLIT_METHODS}. Got {method!r} instead.")
    if not 0 < val_fraction <= 0.5:
        raise ValueError(f"The 'val_fraction' must be in (0, 0.5]. Got {val_fraction} instead.")
    if not 0 <= holdout <= 0.5:
        raise ValueError(f"The 'holdout' fraction must be in [0, 0.5]. Got {holdout} instead.")
    roles = np.full(len(data), "", dtype=object)
    roles[data.splits == "test"] = "test"
    pool = np.flatnonzero(data.splits == "train")
    if len(pool) == 0:
        raise DataLayoutError("no training images: the data has no train/ split")
    if holdout > 0:
        if (data.splits == "test").any():
            raise ValueError("The data has the archive's test/ split; --holdout applies only when it is absent.")
        held = _grouped_fold(data.labels[pool], data.patients[pool], holdout, seed)
        roles[pool[held]] = "test"
        pool = pool[~held]
    if method == "grouped":
        held = _grouped_fold(data.labels[pool], data.patients[pool], val_fraction, seed)
    else:
        _, val = train_test_split(np.arange(len(pool)), test_size=val_fraction, random_state=seed,
                                  stratify=data.labels[pool])
        held = np.zeros(len(pool), bool)
        held[val] = True
    roles[pool[held]] = "val"
    roles[pool[~held]] = "train"
    roles[roles == ""] = "unused"  # the archive's val/ folder
    return Split(roles.astype(str), method, seed)


def split_sha256(split: Split, data: PreparedData) -> str:
    """A hash of which image (by content) has which role: equal for two runs exactly when their splits are."""
    import hashlib

    pairs = sorted(f"{sha}:{role}" for sha, role in zip(data.sha256, split.roles))
    return hashlib.sha256("\n".join(pairs).encode()).hexdigest()


def save_split(path: Path, split: Split, data: PreparedData) -> None:
    """Write the split as CSV (path, role, class, patient, sha256)."""
    with atomic_path(path) as temporary, temporary.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("path", "role", "class", "patient", "sha256"))
        for row in zip(data.paths, split.roles, data.labels, data.patients, data.sha256):
            writer.writerow((row[0], row[1], CLASSES[row[2]], row[3], row[4]))


def _split_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a saved split CSV, checked for the columns a split needs."""
    try:
        with Path(path).open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as error:
        raise DataLayoutError(f"{path}: the split file cannot be read ({error.strerror or error})") from None
    if rows and not {"sha256", "path", "role"} <= set(rows[0]):
        raise DataLayoutError(f"{path}: not a split file (it needs the columns path, sha256 and role, as a run's "
                              "split.csv has)")
    return rows


def split_roles(path: Path) -> dict[str, str]:
    """A saved split CSV's roles by image content (sha256 -> "train", "val", "test"), before any image is read."""
    return {row["sha256"]: row["role"] for row in _split_rows(path)}


def load_split(path: Path, data: PreparedData, *, seed: int = -1) -> Split:
    """Read a saved split CSV and match it to the prepared images by sha256 and path.

    Images not named in the CSV get the role ``unused``, so a fixed internal test set
    stays fixed whatever else is in the data folder.
    """
    by_key = {(row["sha256"], Path(row["path"]).name): row["role"] for row in _split_rows(path)}
    roles = np.array([by_key.get((sha, Path(p).name), "unused") for sha, p in zip(data.sha256, data.paths)])
    if not (roles != "unused").any():
        raise DataLayoutError(f"{path}: none of its images is in the prepared data; is it the right split file?")
    return Split(roles, f"file:{Path(path).name}", seed)

