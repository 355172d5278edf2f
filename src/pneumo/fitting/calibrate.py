"""Calibrate a model on labelled images: temperature, operating point, prior-adaptation fit, conformal
scores, and the novelty check's threshold.

``pneumo calibrate --model RUN`` uses a run's validation images; the shipped models are calibrated the
same way by ``scripts/finalize_shipped.py``. The operating point is the highest threshold on
P(pneumonia) whose sensitivity is at least the target on the clean images and, by default,
also under every middle-severity perturbation of the stress battery, so that the promised
sensitivity does not vanish with a change of scanner.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import nn

from pneumo.evaluation.metrics import summarize
from pneumo.evaluation.stress import BATTERY, perturb
from pneumo.fitting.guarantee import conformal_scores, guaranteed_threshold
from pneumo.fitting.refit import refit_bundle
from pneumo.inference import predict_logits, softmax
from pneumo.inference.calibration import PriorAdaptation, fit_temperature, operating_point
from pneumo.inference.decision import TARGET_SENSITIVITY
from pneumo.inference.novelty import fit_novelty
from pneumo.labels import CLASSES
from pneumo.models.bundle import load_bundle

__all__ = ["DEFAULT_TARGET", "calibrate_bundle", "fit_calibration"]

DEFAULT_TARGET = TARGET_SENSITIVITY


def fit_calibration(model: nn.Module, images: np.ndarray, labels: np.ndarray, *, target: float = DEFAULT_TARGET,
                    stress: bool = True, source: str = "validation", guarantee: str | None = None,
                    confidence: float = 0.95, patients: np.ndarray | None = None) -> dict:
    """The bundle metadata that calibrates ``model`` on labelled uint8 images (N, S, S).

    The operating point reaches ``target`` on the images (``guarantee`` None), or keeps it on new images with a
    finite-sample guarantee (``"conformal"`` or ``"pac"`` at ``confidence``; ``pneumo.fitting.guarantee``), on
    the clean images and, with ``stress``, under every middle-severity perturbation too.

    Returns:
        {"temperature": T, "operating_point": {...}, "prior_adaptation": {...}, "conformal": {...}}, ready for
        save_bundle.
    """
    logits = predict_logits(model, images)
    temperature = fit_temperature(logits, labels)
    probs = {"clean": softmax(logits, temperature)}
    if stress:
        for perturbation in BATTERY:
            if perturbation.severity == "middle":
                shifted = perturb(images, perturbation)
                probs[perturbation.name] = softmax(predict_logits(model, shifted), temperature)
    def cut_off(p: np.ndarray) -> float:
        if guarantee is None:
            return operating_point(labels, p, target)
        return guaranteed_threshold(labels, p, target=target, kind=guarantee, confidence=confidence,
                                    patients=patients).threshold

    thresholds = {name: cut_off(p) for name, p in probs.items()}
    threshold = min(thresholds.values())
    effect = {name: summarize(labels, p, threshold) for name, p in probs.items()}
    point = {
        "pneumonia_threshold": threshold, "target_sensitivity": target,
        "val_sensitivity": effect["clean"]["pneumonia_sensitivity"],
        "val_specificity": effect["clean"]["pneumonia_specificity"], "fitted_on": source,
        **({"guarantee": {"kind": guarantee, "confidence": confidence if guarantee == "pac" else None}}
           if guarantee else {}),
    }
    if stress:
        point.update(holds_under="clean validation images and every middle-severity stress perturbation",
                     clean_only_threshold=thresholds["clean"],
                     val_stress_worst_specificity=min(e["pneumonia_specificity"] for e in effect.values()),
                     val_stress_worst_sensitivity=min(e["pneumonia_sensitivity"] for e in effect.values()))
    return {"temperature": temperature, "operating_point": point,
            "prior_adaptation": PriorAdaptation.fit(logits, labels).to_dict(),
            "conformal": conformal_record(labels, probs["clean"], source)}


def conformal_record(labels: np.ndarray, probs: np.ndarray, source: str) -> dict:
    """The bundle's ``conformal`` entry: per-class calibration scores (``pneumo.inference.conformal``)."""
    return {"kind": "class-conditional split conformal (Vovk et al. 2005)", "fitted_on": source,
            "images": int(len(labels)), "class_counts": np.bincount(labels, minlength=len(CLASSES)).tolist(),
            "scores": conformal_scores(labels, probs, len(CLASSES))}


def calibrate_bundle(path: str | Path, images: np.ndarray, labels: np.ndarray, *,
                     train_images: np.ndarray | None = None, **options) -> dict:
    """Fit the calibration (see fit_calibration) and write it into the bundle at ``path`` (``refit_bundle``);
    returns it, with the novelty check's record (None when the bundle has none).

    With ``train_images`` (the model's training images, uint8 (N, S, S)), the novelty check is fitted
    on them anew, its threshold on ``images``; without, the bundle keeps the one it has.
    """
    bundle = load_bundle(path)
    calibration = fit_calibration(bundle.model, images, labels, **options)
    novelty = bundle.novelty if train_images is None else fit_novelty(
        bundle.model, bundle.info.model_name, train_images, images, source=options.get("source", ""))
    refit_bundle(bundle, novelty=novelty, **calibration)
    return {**calibration, "novelty": novelty.metadata() if novelty is not None else None}
