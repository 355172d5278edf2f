"""Adapting a model to one site's images without labels: BatchNorm statistics (AdaBN).

A network's BatchNorm layers normalize each feature with the mean and variance it had on the
training images. Images from another scanner or export shift those statistics, and every
later layer sees features it was not trained on. AdaBN re-estimates them on unlabeled images
of the new site and changes nothing else (Li et al. 2016, "Revisiting Batch Normalization
for Practical Domain Adaptation"; Schneider et al. 2020, "Improving robustness against
common corruptions by covariate shift adaptation").

What it needs: a batch of images from one site, at least ``MIN_IMAGES``, with a class mix
not far from the one the model will meet there (the statistics absorb the class mix too).
What it does not fix: a change of what the images show (another population, another view),
labels that mean something else, or a site whose images differ from each other as much as
from the training images.

Prior re-estimation (``--adapt priors``, EM) can follow it; it should not come first, since EM
follows the model's own beliefs, which the acquisition shift has moved.
"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pneumo.errors import PneumoError

__all__ = ["MIN_IMAGES", "ADAPT_MODES", "BATCH_SIZE", "adapt_batchnorm", "batchnorm_layers", "file_list_sha256"]

# Below this many images, the per-channel variances of the deeper layers (7x7 maps at 224 px)
# rest on too few values to replace the training statistics.
MIN_IMAGES = 16
BATCH_SIZE = 64
SHUFFLE_SEED = 0
ADAPT_MODES = ("none", "priors", "bn", "bn+priors")


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [module for module in model.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def adapt_batchnorm(model: nn.Module, images: np.ndarray, *, batch_size: int = BATCH_SIZE) -> nn.Module:
    """A copy of ``model`` whose BatchNorm statistics are re-estimated on ``images``.

    Every image counts the same (a cumulative average over batches of ``batch_size``); the
    images are shuffled with a fixed seed first, so that batches mix whatever order the files
    came in. Everything but the statistics stays as it was; the copy is in eval mode.

    Args:
        model: a model built by ``create_model``.
        images: (N, S, S) uint8 images of one site, N >= MIN_IMAGES.

    Raises:
        PneumoError: too few images, or a model without BatchNorm layers.
    """
    if len(images) < MIN_IMAGES:
        raise PneumoError(f"BatchNorm adaptation needs at least {MIN_IMAGES} images of the site; got {len(images)}. "
                          "Give more images (a few hundred re-estimate the statistics well).")
    if not batchnorm_layers(model):
        raise PneumoError(f"this model ({type(model).__name__}) has no BatchNorm layers, so there are no statistics "
                          "to adapt; use --adapt priors, or a model with BatchNorm (mobilenet_v2, efficientnet_lite0, cnn)")
    adapted = copy.deepcopy(model).eval()
    for layer in batchnorm_layers(adapted):
        layer.reset_running_stats()
        layer.momentum = None  # a cumulative average instead of an exponential one
        layer.train()
    device = next(adapted.parameters()).device
    order = np.random.default_rng(SHUFFLE_SEED).permutation(len(images))
    # The cumulative average weighs every batch the same: batches of (nearly) equal size, all images used.
    for indices in np.array_split(order, -(-len(images) // batch_size)):
        batch = torch.from_numpy(np.ascontiguousarray(images[np.sort(indices)])).to(device)
        adapted(batch.float().div_(255.0)[:, None].contiguous(memory_format=torch.channels_last))
    for layer, original in zip(batchnorm_layers(adapted), batchnorm_layers(model)):
        layer.momentum = original.momentum
    return adapted.eval()


def file_list_sha256(files: list[str]) -> str:
    """A hash of the sorted file names an adaptation used: says which images, without storing their paths."""
    return hashlib.sha256("\n".join(sorted(Path(f).name for f in files)).encode()).hexdigest()
