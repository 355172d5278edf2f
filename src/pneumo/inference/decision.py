"""From probabilities to a class, and the sentence that says why.

Two rules. The **most probable class**. Or an **operating point** on P(pneumonia) =
P(bacterial) + P(viral): pneumonia whenever it reaches the threshold, then the likelier of
bacterial and viral, else normal. A shipped model's threshold is chosen on validation for a
pneumonia sensitivity of at least a target (0.97): missing a pneumonia costs more than a false
alarm. With a high threshold the rule can answer NORMAL while one pneumonia class has the
largest single probability; the reason says so, so that the answer never seems to contradict
its numbers.
"""

from __future__ import annotations

import numpy as np

from pneumo.labels import BACTERIAL, NORMAL, SHORT_NAMES, VIRAL

__all__ = ["DECISIONS", "decide", "reason", "rule"]

DECISIONS = ("operating-point", "argmax")
#: Pneumonia sensitivity an operating point keeps unless told otherwise: a missed pneumonia costs more than a
#: false alarm.
TARGET_SENSITIVITY = 0.97


def decide(probs: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """Predicted classes: the most probable one, or with an operating point ``threshold``,
    pneumonia whenever P(bacterial) + P(viral) >= threshold (then the likelier of the two)."""
    probs = np.asarray(probs)
    if threshold is None:
        return probs.argmax(1)
    pneumonia = 1 - probs[:, NORMAL] >= threshold
    return np.where(pneumonia, np.where(probs[:, VIRAL] > probs[:, BACTERIAL], VIRAL, BACTERIAL), NORMAL)


def reason(probs: np.ndarray, label: int, threshold: float | None, source: str = "") -> str:
    """One sentence saying why ``label`` was chosen for one image's probabilities (K,); ``source`` says where the
    operating point came from (``OperatingPoint.source``)."""
    p_pneumonia = 1 - float(probs[NORMAL])
    name = SHORT_NAMES[label]
    if threshold is None:
        return f"{name}: the most probable class ({float(probs[label]):.2f})"
    why = f", {source}" if source else ""
    if label == NORMAL:
        largest = int(np.argmax(probs))
        caveat = (f"; {SHORT_NAMES[largest]} alone is the most probable class ({float(probs[largest]):.2f})"
                  if largest != NORMAL else "")
        return f"normal: P(pneumonia) {p_pneumonia:.2f} is below the operating point {threshold:.2f}{why}{caveat}"
    other = VIRAL if label == BACTERIAL else BACTERIAL
    return (f"{name} pneumonia: P(pneumonia) {p_pneumonia:.2f} reaches the operating point {threshold:.2f}{why}; "
            f"{name} is the likelier kind ({float(probs[label]):.2f} vs {float(probs[other]):.2f})")


def rule(threshold: float | None, source: str = "") -> str:
    """The decision rule in one sentence; ``source`` as for ``reason``."""
    if threshold is None:
        return "the most probable class"
    why = f", {source}" if source else ""
    return (f"pneumonia when P(bacterial) + P(viral) >= {threshold:.3f} (the operating point{why}), "
            "then the likelier kind; otherwise NORMAL")
