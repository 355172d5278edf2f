"""Metrics a clinician reads, their patient-bootstrap confidence intervals, and McNemar's test.

Everything is computed from true labels, predicted probabilities (N, 3) and, for the
intervals, the patient of each image: resampling patients rather than images keeps the
several images of one patient together, as they are not independent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest
from sklearn.metrics import classification_report, confusion_matrix, roc_auc_score

from pneumo.inference.conformal import class_sets
from pneumo.inference.decision import decide
from pneumo.labels import BACTERIAL, CLASSES, NORMAL, SHORT_NAMES, VIRAL

ECE_BINS = 15
EPS = 1e-12
#: The metrics given a bootstrap interval, with the label every table (terminal, card, report) shows.
METRIC_LABELS = {
    "accuracy": "Accuracy", "loss": "Cross-entropy loss", "macro_f1": "Macro F1",
    "recall_normal": "Sensitivity normal", "recall_bacterial": "Sensitivity bacterial", "recall_viral": "Sensitivity viral",
    "macro_auc": "Macro AUC (one-vs-rest)", "pneumonia_sensitivity": "Pneumonia vs normal: sensitivity",
    "pneumonia_specificity": "Pneumonia vs normal: specificity", "pneumonia_auc": "Pneumonia vs normal: AUC",
    "bacterial_viral_auc": "Bacterial vs viral: AUC", "ece": f"ECE ({ECE_BINS} bins)",
}
CI_METRICS = tuple(METRIC_LABELS)


def metric_rows(metrics: dict, *, digits: int = 4) -> list[list[str]]:
    """[label, value, "low – high"] for each metric with an interval, then the Brier score and the
    pneumonia cases called normal: the rows of every metrics table."""
    ci = metrics.get("ci95", {})
    rows = [[label, f"{metrics[key]:.{digits}f}",
             f"{ci[key]['low']:.{digits}f} – {ci[key]['high']:.{digits}f}" if key in ci else ""]
            for key, label in METRIC_LABELS.items() if key in metrics]
    if "brier" in metrics:
        rows.append(["Brier score", f"{metrics['brier']:.{digits}f}", ""])
    if "missed_as_normal" in metrics:
        missed = metrics["missed_as_normal"]
        rows.append(["Pneumonia called normal (bacterial / viral)", f"{missed['bacterial']} / {missed['viral']}", ""])
    return rows


def _safe_auc(y: np.ndarray, score: np.ndarray, weight: np.ndarray | None = None) -> float:
    """ROC AUC, or NaN when only one class is present."""
    if len(np.unique(y[weight > 0] if weight is not None else y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, score, sample_weight=weight))


def _weighted_auc(y: np.ndarray, score: np.ndarray, weight: np.ndarray) -> float:
    """Weighted ROC AUC as the Mann-Whitney statistic (ties count one half).

    Equal to ``roc_auc_score(y, score, sample_weight=weight)`` (checked in the tests), but
    without its input validation, which dominates the time of 1000 bootstrap resamples.
    """
    positive = np.asarray(y, bool)
    _, group = np.unique(score, return_inverse=True)  # tied scores share a group, groups ascend
    pos = np.bincount(group, weights=weight * positive)
    neg = np.bincount(group, weights=weight * ~positive)
    total_pos, total_neg = pos.sum(), neg.sum()
    if total_pos <= 0 or total_neg <= 0:
        return float("nan")
    below = np.cumsum(neg) - neg  # negative weight strictly below each group
    return float((pos * (below + 0.5 * neg)).sum() / (total_pos * total_neg))


def expected_calibration_error(y: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS,
                               weight: np.ndarray | None = None) -> float:
    """Top-label ECE with equal-width confidence bins (Guo et al. 2017)."""
    weight = np.ones(len(y)) if weight is None else weight
    confidence = probs.max(1)
    correct = (probs.argmax(1) == y).astype(np.float64)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    total = weight.sum()
    ece = 0.0
    for b in range(bins):
        w = weight * (which == b)
        if w.sum() > 0:
            ece += w.sum() / total * abs(np.average(correct, weights=w) - np.average(confidence, weights=w))
    return float(ece)


def reliability(y: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> dict[str, list[float]]:
    """Per-bin mean confidence, accuracy and count for a reliability diagram."""
    confidence, correct = probs.max(1), probs.argmax(1) == y
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    rows = {"confidence": [], "accuracy": [], "count": [], "lower": [], "upper": []}
    for b in range(bins):
        members = which == b
        rows["lower"].append(float(edges[b]))
        rows["upper"].append(float(edges[b + 1]))
        rows["count"].append(int(members.sum()))
        rows["confidence"].append(float(confidence[members].mean()) if members.any() else float("nan"))
        rows["accuracy"].append(float(correct[members].mean()) if members.any() else float("nan"))
    return rows


def _core(y: np.ndarray, probs: np.ndarray, weight: np.ndarray, threshold: float | None = None) -> dict[str, float]:
    """The CI metrics, with each image weighted (weights are bootstrap multiplicities)."""
    k = len(CLASSES)
    predicted = decide(probs, threshold)
    matrix = np.zeros((k, k))
    np.add.at(matrix, (y, predicted), weight)
    total = matrix.sum()
    support, predicted_count, hits = matrix.sum(1), matrix.sum(0), np.diag(matrix)
    recall = np.divide(hits, support, out=np.full(k, np.nan), where=support > 0)
    precision = np.divide(hits, predicted_count, out=np.zeros(k), where=predicted_count > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=(precision + recall) > 0)
    loss = float(np.average(-np.log(np.clip(probs[np.arange(len(y)), y], EPS, 1)), weights=weight))
    pneumonia_true, pneumonia_pred = y != NORMAL, predicted != NORMAL
    sick, healthy = weight * pneumonia_true, weight * ~pneumonia_true
    among = y != NORMAL
    bv_score = probs[among, VIRAL] / np.clip(probs[among, BACTERIAL] + probs[among, VIRAL], EPS, None)
    return {
        "accuracy": float(hits.sum() / total),
        "loss": loss,
        "macro_f1": float(np.nanmean(f1)),
        **{f"recall_{name}": float(recall[i]) for i, name in enumerate(SHORT_NAMES)},
        "macro_auc": float(np.nanmean([_weighted_auc(y == c, probs[:, c], weight) for c in range(k)])),
        "pneumonia_sensitivity": float((sick * pneumonia_pred).sum() / max(sick.sum(), EPS)),
        "pneumonia_specificity": float((healthy * ~pneumonia_pred).sum() / max(healthy.sum(), EPS)),
        "pneumonia_auc": _weighted_auc(pneumonia_true, 1 - probs[:, NORMAL], weight),
        "bacterial_viral_auc": _weighted_auc(y[among] == VIRAL, bv_score, weight[among]),
        "ece": expected_calibration_error(y, probs, weight=weight),
    }


def summarize(y: np.ndarray, probs: np.ndarray, threshold: float | None = None) -> dict:
    """All point estimates: the study's table, confusion matrices, reports, AUCs, calibration.

    Args:
        y: (N,) true class indices.
        probs: (N, K) predicted probabilities.
        threshold: operating point on P(pneumonia); None decides by the most probable class.
    """
    y, probs = np.asarray(y), np.asarray(probs, np.float64)
    k = len(CLASSES)
    predicted = decide(probs, threshold)
    core = _core(y, probs, np.ones(len(y)), threshold)
    matrix = confusion_matrix(y, predicted, labels=range(k))
    rows = matrix.sum(1, keepdims=True)
    specificity = {}
    for c, name in enumerate(SHORT_NAMES):
        negatives = y != c
        specificity[name] = float((predicted[negatives] != c).mean()) if negatives.any() else float("nan")
    report = classification_report(y, predicted, labels=range(k), target_names=list(CLASSES), output_dict=True,
                                   zero_division=0)
    one_hot = np.eye(k)[y]
    pneumonia = y != NORMAL
    return {
        "images": int(len(y)),
        "support": {name: int((y == c).sum()) for c, name in enumerate(SHORT_NAMES)},
        **core,
        "confusion_matrix": matrix.tolist(),
        "confusion_matrix_normalized": np.divide(matrix, rows, out=np.zeros_like(matrix, float), where=rows > 0).tolist(),
        "classification_report": report,
        "classification_report_text": classification_report(y, predicted, labels=range(k), target_names=list(CLASSES),
                                                            digits=4, zero_division=0),
        "specificity": specificity,
        "auc": {name: _safe_auc(y == c, probs[:, c]) for c, name in enumerate(SHORT_NAMES)},
        "pneumonia_accuracy": float(((predicted != NORMAL) == pneumonia).mean()),
        "operating_point": threshold,
        # The costliest errors: a pneumonia case called normal, and any miss of its class.
        "missed_as_normal": {SHORT_NAMES[c]: int(((y == c) & (predicted == NORMAL)).sum()) for c in (BACTERIAL, VIRAL)},
        "false_negatives": {SHORT_NAMES[c]: int(((y == c) & (predicted != c)).sum()) for c in (BACTERIAL, VIRAL)},
        "brier": float(((probs - one_hot) ** 2).sum(1).mean()),
        "reliability": reliability(y, probs),
    }


def bootstrap(y: np.ndarray, probs: np.ndarray, patients: np.ndarray, *, resamples: int = 1000, seed: int = 0,
              level: float = 0.95, threshold: float | None = None) -> dict[str, dict[str, float]]:
    """Percentile confidence intervals of the CI metrics, resampling patients with replacement.

    Returns:
        {metric: {"low": ..., "high": ..., "sd": ...}}
    """
    y, probs = np.asarray(y), np.asarray(probs, np.float64)
    _, patient_index = np.unique(np.asarray(patients), return_inverse=True)
    n_patients = patient_index.max() + 1
    rng = np.random.default_rng(seed)
    draws = {name: [] for name in CI_METRICS}
    for _ in range(resamples):
        times_drawn = np.bincount(rng.integers(0, n_patients, n_patients), minlength=n_patients)
        weight = times_drawn[patient_index].astype(np.float64)  # each image counts as often as its patient
        for name, value in _core(y, probs, weight, threshold).items():
            draws[name].append(value)
    tail = (1 - level) / 2 * 100
    intervals = {}
    for name, values in draws.items():
        values = np.asarray(values)
        values = values[~np.isnan(values)]  # an AUC is undefined in a resample holding one class only
        if len(values) == 0:
            intervals[name] = {"low": float("nan"), "high": float("nan"), "sd": float("nan")}
        else:
            low, high = np.percentile(values, [tail, 100 - tail])
            intervals[name] = {"low": float(low), "high": float(high), "sd": float(values.std())}
    return intervals


@dataclass(frozen=True)
class McNemar:
    only_a: int  # images model A gets right and model B wrong
    only_b: int
    p_value: float

    @property
    def significant(self) -> bool:
        return self.p_value < 0.05


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> McNemar:
    """Exact McNemar test: a two-sided binomial test on the discordant pairs."""
    correct_a, correct_b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    only_a, only_b = int((correct_a & ~correct_b).sum()), int((~correct_a & correct_b).sum())
    discordant = only_a + only_b
    p_value = 1.0 if discordant == 0 else float(binomtest(only_a, discordant, 0.5).pvalue)
    return McNemar(only_a, only_b, p_value)


def set_metrics(labels: np.ndarray, probs: np.ndarray, thresholds: np.ndarray) -> dict:
    """Coverage (the share of images whose set holds the true class) and mean set size of conformal class sets
    (``pneumo.inference.conformal``), overall and per class, and how often a set is a single class."""
    labels = np.asarray(labels)
    sets = class_sets(probs, thresholds)
    covered, sizes = sets[np.arange(len(labels)), labels], sets.sum(1)
    result = {"coverage": float(covered.mean()), "mean_size": float(sizes.mean()),
              "single_class": float((sizes == 1).mean())}
    for index, name in enumerate(SHORT_NAMES):
        members = labels == index
        result[f"coverage_{name}"] = float(covered[members].mean()) if members.any() else float("nan")
        result[f"mean_size_{name}"] = float(sizes[members].mean()) if members.any() else float("nan")
    return result
