"""The project's accuracy and robustness targets, measured against an evaluation.

A bundle records the measured rows as data (``metadata["targets"]``); the model card renders them and says why
any is missed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from pneumo.inference.decision import TARGET_SENSITIVITY

__all__ = ["TARGETS", "Target", "measure_targets", "missed"]


@dataclass(frozen=True)
class Target:
    name: str
    goal: float
    sense: str  # ">=" or "<="
    measure: Callable[[dict], float]  # from an ``evaluate`` metrics dict (with its stress battery)


def _middle(metrics: dict) -> list[dict]:
    return [row for row in metrics["stress"]["perturbations"] if row["severity"] == "middle"]


TARGETS = (
    Target("Three-class accuracy", 0.86, ">=", lambda m: m["accuracy"]),
    Target("Macro F1", 0.85, ">=", lambda m: m["macro_f1"]),
    Target("Pneumonia sensitivity at the operating point", TARGET_SENSITIVITY, ">=", lambda m: m["pneumonia_sensitivity"]),
    Target("Pneumonia specificity at the operating point", 0.95, ">=", lambda m: m["pneumonia_specificity"]),
    Target("ECE after temperature scaling", 0.03, "<=", lambda m: m["ece"]),
    Target("Stress, middle severities: worst accuracy drop from clean", 0.03, "<=",
           lambda m: m["stress"]["summary"]["worst_accuracy_drop"]),
    Target("Stress, middle severities: lowest normal recall", 0.95, ">=",
           lambda m: min(row["recall_normal"] for row in _middle(m))),
    Target("Stress, middle severities: lowest pneumonia sensitivity", TARGET_SENSITIVITY, ">=",
           lambda m: min(row["pneumonia_sensitivity"] for row in _middle(m))),
    Target("Stress, middle blur: flip rate", 0.05, "<=", lambda m: m["stress"]["summary"]["blur_flip_rate"]),
)


def measure_targets(metrics: dict, measured_on: str = "internal test") -> dict:
    """Each target's goal and the value ``metrics`` (an evaluation with its stress battery) gives it."""
    rows = []
    for target in TARGETS:
        value = float(target.measure(metrics))
        met = value >= target.goal if target.sense == ">=" else value <= target.goal
        rows.append({"name": target.name, "value": round(value, 4), "goal": target.goal, "sense": target.sense,
                     "met": met})
    return {"measured_on": measured_on, "rows": rows}


def missed(targets: dict) -> list[dict]:
    return [row for row in targets["rows"] if not row["met"]]
