"""The study's two data figures: sample images per class, and one image with its augmentations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pneumo.data.augment import AugmentConfig, augment
from pneumo.data.cache import PreparedData
from pneumo.labels import CLASSES
from pneumo.plotting import plt, save_figure

ATTRIBUTION = "Data: Kermany et al. 2018 (CC BY 4.0)"


def sample_grid(data: PreparedData, out: Path, *, per_class: int = 6, seed: int = 0) -> Path:
    """PNG grid with ``per_class`` random images of each class (one row per class)."""
    rng = np.random.default_rng(seed)
    figure, axes = plt.subplots(len(CLASSES), per_class, figsize=(1.8 * per_class, 2.0 * len(CLASSES)), squeeze=False)
    for row, name in enumerate(CLASSES):
        members = np.flatnonzero(data.labels == row)
        chosen = rng.choice(members, size=min(per_class, len(members)), replace=False) if len(members) else []
        for column in range(per_class):
            axis = axes[row, column]
            axis.axis("off")
            if column < len(chosen):
                axis.imshow(data.images[chosen[column]], cmap="gray", vmin=0, vmax=255)
        axes[row, 0].set_title(f"{name} ({len(members)} images)", loc="left", fontsize=10)
    figure.suptitle(f"Sample images per class - {ATTRIBUTION}", fontsize=9)
    return save_figure(figure, out, dpi=110)


def augment_grid(
    data: PreparedData, out: Path, config: AugmentConfig, *, index: int = 0, count: int = 11, seed: int = 0
) -> Path:
    """PNG grid of one image (top left) and ``count`` random augmentations of it."""
    if not 0 <= index < len(data):
        raise ValueError(f"The image 'index' must be in [0, {len(data) - 1}]. Got {index} instead.")
    image = torch.from_numpy(np.asarray(data.images[index], np.float32) / 255.0)[None, None]  # (1, 1, S, S)
    generator = torch.Generator().manual_seed(seed)
    augmented = augment(image.expand(count, -1, -1, -1), config, generator)
    panels = [image[0, 0]] + list(augmented[:, 0])
    columns = 6
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(1.8 * columns, 1.9 * rows), squeeze=False)
    for axis, number in zip(axes.flat, range(rows * columns)):
        axis.axis("off")
        if number < len(panels):
            axis.imshow(panels[number].numpy(), cmap="gray", vmin=0, vmax=1)
            axis.set_title("original" if number == 0 else f"#{number}", fontsize=8)
    figure.suptitle(f"Augmentation: {config.describe()}\n{data.paths[index]}", fontsize=8)
    return save_figure(figure, out, dpi=110)
