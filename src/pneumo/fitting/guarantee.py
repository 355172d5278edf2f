"""Operating points with a finite-sample guarantee, and the calibration scores of conformal class sets.

A site that labels a few hundred of its own images wants a cut-off on P(pneumonia) that keeps a
pneumonia sensitivity target on the images it has not labelled. A cut-off that merely reaches the
target on the labelled images (the point estimate) misses it on new images about half the time.
Two guarantees, for pneumonia scores that are exchangeable with the new images' (drawn from the
same site):

* **conformal** (split conformal, Vovk et al. 2005; Angelopoulos & Bates 2021): the cut-off is the
  k-th lowest of the n labelled pneumonia scores, k = floor((n + 1)(1 - target)). A new pneumonia
  image falls below it with probability at most k / (n + 1) <= 1 - target, so the *expected*
  sensitivity on new images is >= target. Needs n >= 1 / (1 - target) - 1 (33 at 0.97).
* **PAC** (Vovk 2012; Bates et al. 2021, "Distribution-free, risk-controlling prediction sets"):
  the miss rate of the k-th lowest score is Beta(k, n + 1 - k) distributed, so the largest k with
  P(Binomial(n, 1 - target) <= k - 1) <= 1 - confidence keeps sensitivity >= target *with
  probability* >= confidence over the draw of labelled images: the one-sided Clopper-Pearson bound
  on the miss rate, k - 1 misses seen, stays under 1 - target. Needs more images: 99 at 0.97 and
  95% confidence, where it allows no miss at all.

With patients given, each patient counts once, by the lowest pneumonia score among its images:
images of one child are not exchangeable with each other's, patients are.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import binom

from pneumo.errors import PneumoError
from pneumo.labels import NORMAL

__all__ = ["GUARANTEES", "Guarantee", "conformal_scores", "guaranteed_threshold", "minimum_positives"]

GUARANTEES = ("conformal", "pac")


@dataclass(frozen=True)
class Guarantee:
    """A cut-off on P(pneumonia) and what it promises."""

    threshold: float
    kind: str  # "conformal" or "pac"
    target_sensitivity: float
    confidence: float | None  # PAC only
    positives: int  # labelled pneumonia scores used (patients, when patients were given)
    misses_allowed: int  # labelled pneumonia scores below the cut-off

    def promise(self) -> str:
        """What the cut-off promises, in words."""
        if self.kind == "conformal":
            return (f"expected pneumonia sensitivity >= {self.target_sensitivity:g} on new images of the same site "
                    f"(split conformal, {self.positives} labelled pneumonia cases)")
        return (f"pneumonia sensitivity >= {self.target_sensitivity:g} with probability >= {self.confidence:g} "
                f"over the draw of labelled images (PAC, one-sided Clopper-Pearson, {self.positives} labelled "
                "pneumonia cases)")

    def to_dict(self) -> dict:
        return asdict(self)


def _allowed_misses(n: int, target: float, kind: str, confidence: float) -> int:
    """The largest k - 1 (labelled scores below the cut-off) that the guarantee allows; -1 when none is safe."""
    if kind == "conformal":
        return math.floor((n + 1) * (1 - target) + 1e-9) - 1
    # Largest k with P(Binomial(n, 1 - target) <= k - 1) <= 1 - confidence.
    k = 0
    while k < n and binom.cdf(k, n, 1 - target) <= 1 - confidence + 1e-12:
        k += 1
    return k - 1


def minimum_positives(target: float, kind: str = "conformal", confidence: float = 0.95) -> int:
    """The fewest labelled pneumonia cases for which ``kind`` can place a cut-off at ``target``: conformal needs
    (n + 1)(1 - target) >= 1, PAC needs target^n <= 1 - confidence (no miss allowed at all)."""
    if kind == "conformal":
        n = max(1, math.ceil(1 / (1 - target) - 1 - 1e-9))
    else:
        n = max(1, math.ceil(math.log(1 - confidence) / math.log(target) - 1e-9))
    while _allowed_misses(n, target, kind, confidence) < 0:  # float rounding at the boundary: a step or two
        n += 1
    return n


def guaranteed_threshold(labels: np.ndarray, probs: np.ndarray, *, target: float, kind: str = "conformal",
                         confidence: float = 0.95, patients: np.ndarray | None = None) -> Guarantee:
    """The cut-off on P(pneumonia) = 1 - P(normal) that keeps pneumonia sensitivity >= ``target`` as ``kind`` says.

    Args:
        labels: (N,) class indices of labelled site images (0 is normal).
        probs: (N, K) calibrated probabilities of those images.
        target: the sensitivity to keep, in (0, 1).
        kind: "conformal" (expected sensitivity) or "pac" (with probability ``confidence``).
        patients: (N,) patient ids; each patient then counts once, by its lowest pneumonia score.

    Raises:
        ValueError: an unknown kind, or a target or confidence outside (0, 1).
        PneumoError: too few labelled pneumonia cases for the guarantee, with the number needed.
    """
    if kind not in GUARANTEES:
        raise ValueError(f"The 'kind' of guarantee must be one of {GUARANTEES}. Got {kind!r} instead.")
    if not 0 < target < 1 or not 0 < confidence < 1:
        raise ValueError(f"The 'target' and 'confidence' must be in (0, 1). Got {target} and {confidence} instead.")
    labels, probs = np.asarray(labels), np.asarray(probs, np.float64)
    if len(probs) != len(labels) or (patients is not None and len(patients) != len(labels)):
        raise ValueError(f"The labels, probabilities and patients must describe the same images. Got {len(labels)}, "
                         f"{len(probs)} and {'none' if patients is None else len(patients)} instead.")
    sick = labels != NORMAL
    scores = 1 - probs[sick, NORMAL]
    if patients is not None:
        groups = np.asarray(patients)[sick]
        scores = np.array([scores[groups == patient].min() for patient in np.unique(groups)])
    n = len(scores)
    misses = _allowed_misses(n, target, kind, confidence)
    if misses < 0:
        needed = minimum_positives(target, kind, confidence)
        unit = "patients with pneumonia" if patients is not None else "pneumonia images"
        raise PneumoError(f"a {kind} cut-off for sensitivity {target:g}"
                          f"{f' at confidence {confidence:g}' if kind == 'pac' else ''} needs at least {needed} "
                          f"labelled {unit}; got {n}. Label more, lower the target, or keep the model's own cut-off "
                          "(--keep-operating-point)")
    threshold = float(np.sort(scores)[misses])
    return Guarantee(threshold, kind, target, confidence if kind == "pac" else None, n, misses)


def conformal_scores(labels: np.ndarray, probs: np.ndarray, classes: int) -> list[list[float]]:
    """Per class, the sorted nonconformity scores 1 - P(true class) of labelled images: what class-conditional
    conformal sets (``pneumo.inference.conformal``) need, for any coverage chosen later."""
    labels, probs = np.asarray(labels), np.asarray(probs, np.float64)
    return [np.sort(1 - probs[labels == c, c]).round(6).tolist() for c in range(classes)]
