"""Figures of an evaluation: confusion matrices, ROC curves, reliability diagram."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.metrics import roc_curve

from pneumo.labels import CLASSES, NORMAL
from pneumo.plotting import plt, save_figure


def confusion_figure(metrics: dict, out: Path, title: str = "") -> Path:
    """Counts and row-normalized confusion matrices side by side."""
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    names = [name.replace(" Pneumonia", "\npneumonia") for name in CLASSES]
    for axis, key, fmt in ((axes[0], "confusion_matrix", "{:.0f}"), (axes[1], "confusion_matrix_normalized", "{:.1%}")):
        matrix = np.array(metrics[key], float)
        axis.imshow(matrix, cmap="Blues", vmin=0, vmax=matrix.max() or 1)
        for (i, j), value in np.ndenumerate(matrix):
            axis.text(j, i, fmt.format(value), ha="center", va="center",
                      color="white" if value > 0.6 * (matrix.max() or 1) else "black")
        axis.set_xticks(range(len(names)), names)
        axis.set_yticks(range(len(names)), names)
        axis.set_xlabel("predicted")
        axis.set_ylabel("true")
        axis.set_title("counts" if key == "confusion_matrix" else "row-normalized (recall on the diagonal)")
    if title:
        figure.suptitle(title)
    return save_figure(figure, out)


def roc_figure(y: np.ndarray, probs: np.ndarray, out: Path, title: str = "") -> Path:
    """One-vs-rest ROC per class, and normal vs pneumonia."""
    figure, axis = plt.subplots(figsize=(5.2, 5))
    curves = [(f"{name} vs rest", y == c, probs[:, c]) for c, name in enumerate(CLASSES)]
    curves.append(("pneumonia vs normal", y != NORMAL, 1 - probs[:, NORMAL]))
    for label, truth, score in curves:
        if truth.all() or not truth.any():
            continue
        fpr, tpr, _ = roc_curve(truth, score)
        axis.plot(fpr, tpr, label=label, lw=1.6, ls="--" if "normal" in label and "vs rest" not in label else "-")
    axis.plot([0, 1], [0, 1], color="grey", lw=0.8)
    axis.set_xlabel("1 - specificity")
    axis.set_ylabel("sensitivity")
    axis.legend(loc="lower right", fontsize=8)
    axis.set_title(title or "ROC curves")
    return save_figure(figure, out)


def reliability_figure(metrics: dict, out: Path, title: str = "") -> Path:
    """Accuracy against confidence per bin, with the bin counts underneath."""
    rows = metrics["reliability"]
    centers = (np.array(rows["lower"]) + np.array(rows["upper"])) / 2
    width = rows["upper"][0] - rows["lower"][0]
    figure, (axis, counts) = plt.subplots(2, 1, figsize=(5.2, 5.6), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    accuracy = np.nan_to_num(np.array(rows["accuracy"], float))
    axis.bar(centers, accuracy, width=width * 0.95, edgecolor="black", label="accuracy")
    axis.plot([0, 1], [0, 1], color="red", ls="--", label="perfect calibration")
    axis.set_ylabel("accuracy")
    axis.set_title(title or f"Reliability (ECE {metrics['ece']:.3f})")
    axis.legend(loc="upper left", fontsize=8)
    counts.bar(centers, rows["count"], width=width * 0.95, color="grey")
    counts.set_xlabel("confidence (top-class probability)")
    counts.set_ylabel("images")
    return save_figure(figure, out)
