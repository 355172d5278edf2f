"""The study's augmentation (random rotation, width/height shift and zoom), plus optional
anatomy-safe intensity changes (brightness, contrast, gamma). No flips: a chest X-ray's
left and right are not interchangeable (the heart sits on the left).

Applied to whole batches on whichever device they are on (the GPU when training there),
with an independent random affine transform per image and all randomness drawn from a
``torch.Generator`` that the caller passes in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random affine transform (Keras ImageDataGenerator semantics)."""

    rotation: float = 10.0  # degrees, uniform in [-rotation, rotation]
    shift: float = 0.1  # fraction of width/height, uniform in [-shift, shift]
    zoom: float = 0.1  # scale uniform in [1 - zoom, 1 + zoom]
    brightness: float = 0.0  # added intensity, uniform in [-brightness, brightness] (image in [0, 1])
    contrast: float = 0.0  # contrast factor around the image mean, uniform in [1 - contrast, 1 + contrast]
    gamma: float = 0.0  # gamma log-uniform in [1 / (1 + gamma), 1 + gamma]

    def __post_init__(self) -> None:
        for name in ("rotation", "shift", "zoom", "brightness", "contrast", "gamma"):
            if getattr(self, name) < 0:
                raise ValueError(f"The augmentation '{name}' must be >= 0. Got {getattr(self, name)} instead.")
        for name in ("zoom", "brightness", "contrast"):
            if getattr(self, name) >= 1:
                raise ValueError(f"The augmentation '{name}' must be < 1. Got {getattr(self, name)} instead.")

    @property
    def geometric(self) -> bool:
        return bool(self.rotation or self.shift or self.zoom)

    @property
    def photometric(self) -> bool:
        return bool(self.brightness or self.contrast or self.gamma)

    @property
    def enabled(self) -> bool:
        return self.geometric or self.photometric


def augment(images: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """The random affine transform, then the random intensity changes, each per image."""
    return random_photometric(random_affine(images, config, generator), config, generator)


def random_affine(images: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Rotate, shift and zoom each image of a batch by its own random amount.

    Args:
        images: (B, C, H, W) float tensor.
        config: the ranges.
        generator: source of randomness, on the same device type as ``images``.

    Returns:
        (B, C, H, W) tensor; pixels moved in from outside are filled with the nearest edge
        (Keras' default ``fill_mode='nearest'``).
    """
    if not config.geometric:
        return images
    batch = images.shape[0]
    uniform = torch.rand((batch, 4), generator=generator, device=generator.device).to(images.device) * 2 - 1
    angle = uniform[:, 0] * math.radians(config.rotation)
    scale = 1 + uniform[:, 1] * config.zoom
    # affine_grid maps output to input coordinates in [-1, 1]: a shift of s of the width is 2s.
    shift = uniform[:, 2:] * 2 * config.shift
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)  # (B, H, W, 2)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_photometric(images: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Per-image random gamma, contrast and brightness on (B, C, H, W) images in [0, 1].

    Returns images clamped to [0, 1]; unchanged (and no random numbers drawn) when the
    config has no intensity change, so the study's augmentation stays bit-identical.
    """
    if not config.photometric:
        return images
    batch = images.shape[0]
    uniform = torch.rand((batch, 3), generator=generator, device=generator.device).to(images.device) * 2 - 1
    shape = (batch,) + (1,) * (images.dim() - 1)
    gamma = torch.exp(uniform[:, 0] * math.log1p(config.gamma)).view(shape).to(images.dtype)
    images = images.clamp(0, 1).pow(gamma)
    mean = images.mean(dim=tuple(range(1, images.dim())), keepdim=True)
    contrast = (1 + uniform[:, 1] * config.contrast).view(shape).to(images.dtype)
    brightness = (uniform[:, 2] * config.brightness).view(shape).to(images.dtype)
    return ((images - mean) * contrast + mean + brightness).clamp(0, 1)
