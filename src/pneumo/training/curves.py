"""Training curves like the study's figures: loss and accuracy, train vs validation."""

from __future__ import annotations

from pathlib import Path

from matplotlib.ticker import MaxNLocator

from pneumo.plotting import plt, save_figure


def plot_curves(rows: list[dict[str, float]], out: Path, title: str = "") -> Path:
    epochs = [row["epoch"] for row in rows]
    figure, (loss_axis, acc_axis) = plt.subplots(1, 2, figsize=(10, 3.8))
    for axis, metric, label in ((loss_axis, "loss", "cross-entropy loss"), (acc_axis, "acc", "accuracy")):
        axis.plot(epochs, [row[f"train_{metric}"] for row in rows], "o-", ms=3, label="train")
        axis.plot(epochs, [row[f"val_{metric}"] for row in rows], "o-", ms=3, label="validation")
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))  # no epoch 1.5
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        axis.legend()
    if title:
        figure.suptitle(title)
    return save_figure(figure, out)
