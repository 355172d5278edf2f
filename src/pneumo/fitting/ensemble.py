"""``write_ensemble``: assemble trained bundles into one ensemble bundle, calibrated on validation images."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pneumo.fitting.calibrate import fit_calibration
from pneumo.inference.novelty import fit_novelty
from pneumo.models.bundle import BUNDLE_NAME, save_bundle
from pneumo.models.ensemble import ENSEMBLE_NAME, ensemble_from_bundles

__all__ = ["write_ensemble"]


def write_ensemble(bundles: list, out: Path, images: np.ndarray, labels: np.ndarray, *, name: str,
                   source: str, views: tuple[float, ...] = (1.0,), train_images: np.ndarray | None = None) -> Path:
    """Assemble ``bundles`` (with test-time ``views``), fit the ensemble's temperature and operating point
    on labelled validation images (N, S, S) at the ensemble's input size, and write ``out/model.pt``;
    returns its path.

    With the members' ``train_images`` (uint8, same size), the ensemble gets a novelty check on its
    members' features, its threshold set on the validation images.
    """
    ensemble, metadata = ensemble_from_bundles(bundles, views=views)
    for role, given in (("calibration", images), ("training", train_images)):
        if given is not None and given.shape[-1] != ensemble.size:
            raise ValueError(f"The {role} images must be {ensemble.size} px, the largest member input. "
                             f"Got {given.shape[-1]} px instead.")
    ensemble.eval()
    calibration = fit_calibration(ensemble, images, labels, source=source)
    novelty = (None if train_images is None
               else fit_novelty(ensemble, ENSEMBLE_NAME, train_images, images, source=source))
    path = Path(out) / BUNDLE_NAME
    save_bundle(path, ensemble, model_name=ENSEMBLE_NAME, size=ensemble.size, novelty=novelty, id=name, **metadata,
                **calibration)
    return path
