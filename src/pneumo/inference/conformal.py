"""Conformal class sets: each image gets the classes that cover its true class with probability >= 1 - alpha.

Class-conditional split conformal prediction (Vovk et al. 2005, "Mondrian" conformal; Angelopoulos &
Bates 2021, section 4.1): for each class c the labelled calibration images of class c give scores
1 - P(c); the set of a new image holds every class c with 1 - P(c) <= q_c, where q_c is the
ceil((n_c + 1)(1 - alpha))-th smallest of the n_c scores. Coverage then holds for each class
separately (so viral cases get theirs too, not only the common classes), whenever the new image and
the calibration images of its class are exchangeable: the same site and population. A class with too
few calibration images for alpha is always included, which keeps the promise by saying less.

The scores travel in the model's metadata (``conformal``), so alpha is chosen when predicting.
"""

from __future__ import annotations

import math

import numpy as np

from pneumo.labels import BACTERIAL, NORMAL, SHORT_NAMES, VIRAL

__all__ = ["class_sets", "class_thresholds", "set_name"]


def class_thresholds(scores: list[list[float]], alpha: float) -> np.ndarray:
    """(K,) thresholds q_c on 1 - P(c) for coverage 1 - ``alpha``; 1.0 (always in) for a class with too few scores.

    Raises:
        ValueError: alpha outside (0, 1).
    """
    if not 0 < alpha < 1:
        raise ValueError(f"The conformal 'alpha' must be in (0, 1), e.g. 0.1 for 90% coverage. Got {alpha} instead.")
    thresholds = []
    for class_scores in scores:
        n = len(class_scores)
        k = math.ceil((n + 1) * (1 - alpha) - 1e-9)
        thresholds.append(1.0 if k > n else float(np.sort(class_scores)[k - 1]))
    return np.array(thresholds)


def class_sets(probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """(N, K) booleans: class c is in the set of image i when 1 - probs[i, c] <= thresholds[c]."""
    return (1 - np.asarray(probs, np.float64)) <= np.asarray(thresholds)[None] + 1e-12


def set_name(members: np.ndarray) -> str:
    """A class set (K,) in words: "viral", "bacterial or viral pneumonia", "normal or bacterial", ..."""
    chosen = [c for c in range(len(members)) if members[c]]
    if not chosen:
        return "none of the classes (an unusual image)"
    if len(chosen) == len(members):
        return "any of the three (the model cannot narrow it down)"
    if chosen == [BACTERIAL, VIRAL]:
        return "bacterial or viral pneumonia"
    names = [SHORT_NAMES[c] + (" pneumonia" if c != NORMAL and len(chosen) == 1 else "") for c in chosen]
    return " or ".join(names)
