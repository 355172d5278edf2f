"""The stress battery: a model's metrics under fixed acquisition changes of graded severity.

An internal test split drawn from the same folder as the training images shares their
acquisition: same scanners, same export, same resizing. Images from elsewhere differ in
sharpness, resolution, noise, compression, tone and framing, and a model that learned such
cues instead of the lungs fails there while scoring well at home. The battery applies each
change at fixed strengths and reports what it does to accuracy, per-class recall, pneumonia
sensitivity/specificity at the model's rule, and the flip rate (the share of images whose
decided class changes against the clean run).

The battery is fixed here, with its own seed, and its "middle" severities lie beyond the
ranges of the training augmentation (``configs/``): it measures generalization to changes the
model has not seen at that strength, not recall of its augmentation. The one exception is a
recipe trained against tight framing, whose range covers the zoom-ins up to "severe"; the
"beyond" zoom-in lies outside every recipe's range. Strengths in pixels are
given at 224 px and scaled to the model's input size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from pneumo.data import acquisition
from pneumo.evaluation.metrics import NORMAL, decide, set_metrics
from pneumo.labels import SHORT_NAMES

__all__ = ["BATTERY", "SEVERITIES", "Perturbation", "perturb", "stress_test", "summarize_stress"]

STRESS_SEED = 2026_11_29  # the noise of the battery; fixed so that every model sees the same images
REFERENCE_SIZE = 224
SEVERITIES = ("mild", "middle", "severe", "beyond")
UNSHARP_SIGMA = 1.5  # px at 224


@dataclass(frozen=True)
class Perturbation:
    """One fixed acquisition change.

    Attributes:
        family: what changes ("blur", "jpeg", ...); one family has one or more severities.
        severity: "mild", "middle", "severe" or "beyond" (outside every recipe's training range).
        description: the change in words, with its strength.
        apply: ``apply(images, pixels, generator)`` on (B, 1, S, S) floats in [0, 1], where
            ``pixels`` is S / 224 (to scale strengths given in pixels).
    """

    family: str
    severity: str
    description: str
    apply: Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]

    @property
    def name(self) -> str:
        return f"{self.family}/{self.severity}"


def _blur(images, pixels, generator, *, sigma):
    return acquisition.gaussian_blur(images, sigma * pixels)


def _unsharp(images, pixels, generator, *, amount):
    return acquisition.unsharp_mask(images, amount, sigma=UNSHARP_SIGMA * pixels)


def _resample(images, pixels, generator, *, factor):
    return acquisition.resample(images, factor)


def _gamma(images, pixels, generator, *, value):
    return acquisition.gamma(images, value)


def _contrast(images, pixels, generator, *, factor):
    return acquisition.contrast(images, factor)


def _noise(images, pixels, generator, *, std):
    return acquisition.gaussian_noise(images, std, generator)


def _jpeg(images, pixels, generator, *, quality):
    return acquisition.jpeg(images, quality)


def _affine(images, pixels, generator, **framing):
    return acquisition.affine(images, **framing)


# Training ranges of the shipped recipes, for comparison (configs/): blur sigma <= 1.2 px, unsharp
# <= 1.0, down-up >= 0.5x, noise <= 0.03, JPEG >= 40, gamma in [0.77, 1.3], contrast +-20%, zoom
# +-10% with crops up to 1.2x (1.31x together; 1.71x with tight framing 0.3), shift +-10%, rotation +-10 degrees.
# Every middle severity is outside them, zoom-in apart for the tight-framing recipe; zoom-in/beyond is outside all.
# Zooms are compared by area: a crop of extreme aspect (3/4) enlarges one axis up to 1.2x further.
BATTERY: tuple[Perturbation, ...] = (
    Perturbation("blur", "mild", "Gaussian blur, sigma 1 px", partial(_blur, sigma=1.0)),
    Perturbation("blur", "middle", "Gaussian blur, sigma 2 px", partial(_blur, sigma=2.0)),
    Perturbation("blur", "severe", "Gaussian blur, sigma 3 px", partial(_blur, sigma=3.0)),
    Perturbation("down-up", "middle", "shrunk to 0.4x and enlarged back", partial(_resample, factor=0.4)),
    Perturbation("down-up", "severe", "shrunk to 0.25x and enlarged back", partial(_resample, factor=0.25)),
    Perturbation("unsharp", "middle", "unsharp mask, amount 1.5", partial(_unsharp, amount=1.5)),
    Perturbation("unsharp", "severe", "unsharp mask, amount 3", partial(_unsharp, amount=3.0)),
    Perturbation("gamma-low", "middle", "gamma 0.7 (brighter mid-tones)", partial(_gamma, value=0.7)),
    Perturbation("gamma-high", "middle", "gamma 1.5 (darker mid-tones)", partial(_gamma, value=1.5)),
    Perturbation("contrast-low", "middle", "contrast x0.7", partial(_contrast, factor=0.7)),
    Perturbation("contrast-high", "middle", "contrast x1.35", partial(_contrast, factor=1.35)),
    Perturbation("noise", "middle", "Gaussian noise, sigma 0.04", partial(_noise, std=0.04)),
    Perturbation("noise", "severe", "Gaussian noise, sigma 0.08", partial(_noise, std=0.08)),
    Perturbation("jpeg", "middle", "JPEG quality 25", partial(_jpeg, quality=25)),
    Perturbation("jpeg", "severe", "JPEG quality 10", partial(_jpeg, quality=10)),
    Perturbation("zoom-in", "middle", "zoomed in 1.35x", partial(_affine, scale=1.35)),
    Perturbation("zoom-in", "severe", "zoomed in 1.5x", partial(_affine, scale=1.5)),
    Perturbation("zoom-in", "beyond", "zoomed in 1.8x", partial(_affine, scale=1.8)),
    Perturbation("zoom-out", "middle", "zoomed out 0.85x (edges repeated)", partial(_affine, scale=0.85)),
    Perturbation("zoom-out", "severe", "zoomed out 0.75x (edges repeated)", partial(_affine, scale=0.75)),
    Perturbation("shift", "middle", "shifted 12% right and down", partial(_affine, shift=(0.12, 0.12))),
    Perturbation("rotation", "middle", "rotated 12 degrees", partial(_affine, rotation=12.0)),
)


def perturb(images: np.ndarray, perturbation: Perturbation, *, seed: int = STRESS_SEED,
            batch_size: int = 256) -> np.ndarray:
    """The uint8 images (N, S, S) with one perturbation applied, again as uint8 (as an 8-bit export would be)."""
    generator = torch.Generator().manual_seed(seed)
    pixels = images.shape[-1] / REFERENCE_SIZE
    out = np.empty_like(images)
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.array(images[start:start + batch_size]))[:, None].float() / 255
        changed = perturbation.apply(batch, pixels, generator)
        out[start:start + batch_size] = (changed[:, 0] * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    return out


def _accuracy_interval(correct: np.ndarray, patients: np.ndarray, *, resamples: int, seed: int) -> tuple[float, float]:
    """95% percentile interval of accuracy over patient-bootstrap resamples."""
    _, index = np.unique(patients, return_inverse=True)
    hits, counts = np.bincount(index, weights=correct), np.bincount(index)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(counts), (resamples, len(counts)))
    values = hits[draws].sum(1) / counts[draws].sum(1)
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def _scores(labels: np.ndarray, predicted: np.ndarray, clean: np.ndarray, patients: np.ndarray,
            resamples: int, seed: int) -> dict:
    correct = (predicted == labels).astype(np.float64)
    pneumonia, called = labels != NORMAL, predicted != NORMAL
    scores = {"accuracy": float(correct.mean())}
    scores["accuracy_ci95"] = _accuracy_interval(correct, patients, resamples=resamples, seed=seed)
    for index, name in enumerate(SHORT_NAMES):
        members = labels == index
        scores[f"recall_{name}"] = float((predicted[members] == index).mean()) if members.any() else float("nan")
    scores["pneumonia_sensitivity"] = float(called[pneumonia].mean()) if pneumonia.any() else float("nan")
    scores["pneumonia_specificity"] = float((~called[~pneumonia]).mean()) if (~pneumonia).any() else float("nan")
    scores["flip_rate"] = float((predicted != clean).mean())
    return scores


def stress_test(probabilities: Callable[[np.ndarray], np.ndarray], images: np.ndarray, labels: np.ndarray,
                patients: np.ndarray, *, threshold: float | None = None, battery: tuple[Perturbation, ...] = BATTERY,
                resamples: int = 1000, seed: int = 0, conformal_thresholds: np.ndarray | None = None) -> dict:
    """Run the battery.

    Args:
        probabilities: the model with its calibration, uint8 images (N, S, S) -> probabilities (N, K).
            It sees each perturbed set whole, so a model that adapts to the images it is given
            (``--adapt bn``) adapts to each perturbation in turn, as it would at a site.
        images, labels, patients: the evaluated set.
        threshold: the model's operating point on P(pneumonia); None decides by the most probable class.
        battery: the perturbations (default: the fixed battery).
        resamples, seed: patient bootstrap of the accuracy intervals.
        conformal_thresholds: (K,) thresholds of conformal class sets; each row then also has their coverage and
            size (``metrics.set_metrics``).

    Returns:
        {"clean": scores, "perturbations": [{name, family, severity, description, **scores}],
         "summary": summarize_stress(...), "rule": ..., "seed": STRESS_SEED}
    """
    def scored(batch: np.ndarray, clean: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
        probs = probabilities(batch)
        predicted = decide(probs, threshold)
        scores = _scores(labels, predicted, predicted if clean is None else clean, patients, resamples, seed)
        if conformal_thresholds is not None:
            scores["conformal"] = set_metrics(labels, probs, conformal_thresholds)
        return predicted, scores

    clean, clean_scores = scored(images)
    result = {"rule": "operating point" if threshold is not None else "most probable class",
              "threshold": threshold, "seed": STRESS_SEED, "images": int(len(labels)),
              "clean": clean_scores, "perturbations": []}
    for perturbation in battery:
        _, scores = scored(perturb(images, perturbation), clean)
        result["perturbations"].append({
            "name": perturbation.name, "family": perturbation.family, "severity": perturbation.severity,
            "description": perturbation.description, **scores})
    result["summary"] = summarize_stress(result)
    return result


def summarize_stress(result: dict, severity: str = "middle") -> dict:
    """The worst case at one severity: lowest accuracy, normal recall and pneumonia sensitivity, highest flips."""
    rows = [row for row in result["perturbations"] if row["severity"] == severity]
    if not rows:
        return {}

    def worst(key: str, highest: bool = False) -> dict:
        row = (max if highest else min)(rows, key=lambda r: r[key])
        return {"value": row[key], "perturbation": row["name"]}

    blur = next((row for row in rows if row["family"] == "blur"), None)
    return {
        "severity": severity,
        "clean_accuracy": result["clean"]["accuracy"],
        "worst_accuracy": worst("accuracy"),
        "worst_accuracy_drop": result["clean"]["accuracy"] - worst("accuracy")["value"],
        "worst_recall_normal": worst("recall_normal"),
        "worst_pneumonia_sensitivity": worst("pneumonia_sensitivity"),
        "worst_flip_rate": worst("flip_rate", highest=True),
        "blur_flip_rate": blur["flip_rate"] if blur else None,
    }
