"""The study's augmentation (random rotation, width/height shift and zoom), plus optional
anatomy-safe intensity changes (brightness, contrast, gamma), random-resized-crop framing, tight
framing (a zoom-in about the centre, as older children are framed shoulders-up) and
acquisition changes (blur or sharpening, down-up resampling, noise, JPEG re-compression; see
``pneumo.data.acquisition``). No flips: a chest X-ray's left and right are not interchangeable
(the heart sits on the left).

Applied to whole batches on whichever device they are on (the GPU when training there),
with an independent random affine transform per image and all randomness drawn from a
``torch.Generator`` that the caller passes in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from pneumo.data import acquisition

# Strengths in pixels (blur sigma) are given for a 224 px image and scaled to the batch's size,
# so that one recipe means the same blur at 128 px and at 224 px.
REFERENCE_SIZE = 224
# Aspect ratios of the random crop, log-uniform in [3/4, 4/3] (torchvision's RandomResizedCrop).
CROP_ASPECT = (3 / 4, 4 / 3)
UNSHARP_SIGMA = 1.5  # radius of the unsharp mask, pixels at REFERENCE_SIZE
FRAMING_SHARE = 0.5  # the share of images that tight framing zooms in


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random affine transform (Keras ImageDataGenerator semantics)."""

    rotation: float = field(default=10.0, metadata={"help": "Maximum rotation in degrees."})
    shift: float = field(default=0.1, metadata={"help": "Maximum width/height shift, a fraction of the side."})
    zoom: float = field(default=0.1, metadata={"help": "Maximum zoom in or out: scale in [1-zoom, 1+zoom]."})
    brightness: float = field(default=0.0, metadata={"help": "Maximum added brightness, 0-1."})
    contrast: float = field(default=0.0, metadata={"help": "Contrast factor around the mean in [1-c, 1+c]."})
    gamma: float = field(default=0.0, metadata={"help": "Gamma, log-uniform in [1/(1+g), 1+g]."})
    crop: float = field(default=0.0, metadata={"help": "Random-resized crop: kept area in [1-crop, 1]."})
    framing: float = field(default=0.0, metadata={"help": "Tight framing: half of the images zoomed in by up to "
                                                          "1+framing about the centre, on top of zoom and crop."})
    blur: float = field(default=0.0, metadata={"help": "Gaussian blur sigma up to this (px at 224 px), for half "
                                                       "of the images..."})
    sharpen: float = field(default=0.0, metadata={"help": "...and an unsharp-mask amount up to this for the other "
                                                          "half."})
    downsample: float = field(default=0.0, metadata={"help": "Shrink by a factor in [1-d, 1], then enlarge back."})
    noise: float = field(default=0.0, metadata={"help": "Gaussian noise sigma up to this (image in 0-1)."})
    jpeg: int = field(default=0, metadata={"help": "JPEG re-compression at a quality from this up to 100; 0 = off."})

    def __post_init__(self) -> None:
        for name in ("rotation", "shift", "zoom", "brightness", "contrast", "gamma", "crop", "framing", "blur",
                     "sharpen", "downsample", "noise", "jpeg"):
            if getattr(self, name) < 0:
                raise ValueError(f"The augmentation '{name}' must be >= 0. Got {getattr(self, name)} instead.")
        for name in ("zoom", "brightness", "contrast", "crop", "framing", "downsample", "noise"):
            if getattr(self, name) >= 1:
                raise ValueError(f"The augmentation '{name}' must be < 1. Got {getattr(self, name)} instead.")
        if self.jpeg > 100:
            raise ValueError(f"The augmentation 'jpeg' must be a quality in [1, 100], or 0 for off. Got {self.jpeg} instead.")

    @property
    def geometric(self) -> bool:
        return bool(self.rotation or self.shift or self.zoom or self.crop or self.framing)

    @property
    def photometric(self) -> bool:
        return bool(self.brightness or self.contrast or self.gamma)

    @property
    def acquisition(self) -> bool:
        return bool(self.blur or self.sharpen or self.downsample or self.noise or self.jpeg)

    @property
    def enabled(self) -> bool:
        return self.geometric or self.photometric or self.acquisition

    def describe(self) -> str:
        """One line naming every change that is on, for figures and logs."""
        parts = [f"rotation ±{self.rotation:g}°", f"shift ±{self.shift:.0%}", f"zoom ±{self.zoom:.0%}"]
        if self.crop:
            parts.append(f"crop area ≥{1 - self.crop:.0%}")
        if self.framing:
            parts.append(f"tight framing ≤{1 + self.framing:.2g}x for half")
        if self.photometric:
            parts.append(f"brightness ±{self.brightness:g}, contrast ±{self.contrast:.0%}, gamma {self.gamma:g}")
        if self.blur or self.sharpen:
            parts.append(f"blur σ≤{self.blur:g} px / unsharp ≤{self.sharpen:g}")
        if self.downsample:
            parts.append(f"down-up ≥{1 - self.downsample:.2g}x")
        if self.noise:
            parts.append(f"noise σ≤{self.noise:g}")
        if self.jpeg:
            parts.append(f"JPEG q≥{self.jpeg}")
        return ", ".join(parts)


def augment(images: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """The random affine transform, the random intensity changes, then the acquisition changes, each per image."""
    images = random_photometric(random_affine(images, config, generator), config, generator)
    return random_acquisition(images, config, generator)


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
    # The crop's share of the width and height (1 = no crop); drawn only when on, so that the
    # study's augmentation stays bit-identical.
    width, height = torch.ones(batch, device=images.device), torch.ones(batch, device=images.device)
    if config.crop:
        draws = torch.rand((batch, 4), generator=generator, device=generator.device).to(images.device)
        area = 1 - draws[:, 0] * config.crop
        aspect = torch.exp(math.log(CROP_ASPECT[0]) + draws[:, 1] * math.log(CROP_ASPECT[1] / CROP_ASPECT[0]))
        width, height = (area * aspect).sqrt().clamp(max=1), (area / aspect).sqrt().clamp(max=1)
        # The crop lies anywhere inside the image.
        shift = shift + (draws[:, 2:] * 2 - 1) * torch.stack([1 - width, 1 - height], 1)
    if config.framing:
        # Drawn only when on, like the crop, so that recipes without it stay bit-identical.
        draws = torch.rand((batch, 2), generator=generator, device=generator.device).to(images.device)
        scale = scale * torch.where(draws[:, 0] < FRAMING_SHARE, 1 + draws[:, 1] * config.framing, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * width, -sin * height, shift[:, 0]], 1),
                         torch.stack([sin * width, cos * height, shift[:, 1]], 1)], 1)
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


def random_acquisition(images: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Per-image blur or sharpening, down-up resampling, noise and JPEG re-compression, in that order.

    The order follows an image's way out of a scanner: optics and processing, a resize on
    export, detector noise, then compression. Unchanged (and no random numbers drawn) when no
    acquisition change is on.
    """
    if not config.acquisition:
        return images
    batch, pixels = images.shape[0], images.shape[-1] / REFERENCE_SIZE
    uniform = torch.rand((batch, 4), generator=generator, device=generator.device).to(images.device)
    direction = uniform[:, 0] * 2 - 1  # < 0: blur, > 0: sharpen, by |direction| of the maximum
    sigma = (-direction).clamp(min=0) * config.blur * pixels
    amount = direction.clamp(min=0) * config.sharpen
    images = acquisition.gaussian_blur(images, sigma)
    images = acquisition.unsharp_mask(images, amount, sigma=UNSHARP_SIGMA * pixels)
    images = acquisition.resample(images, 1 - uniform[:, 1] * config.downsample)
    images = acquisition.gaussian_noise(images, uniform[:, 2] * config.noise, generator)
    if config.jpeg:
        images = acquisition.jpeg(images, config.jpeg + uniform[:, 3] * (100 - config.jpeg))
    return images
