"""Deterministic acquisition changes on batches of gray images in [0, 1].

What changes between one X-ray site and the next is less the anatomy than how the image was
acquired and exported: its sharpness (detector, processing, resizing), its noise, its JPEG
compression, its tone curve. These functions apply such changes with a given strength per
image. The random training augmentation (``pneumo.data.augment``) draws the strengths; the
stress battery (``pneumo.evaluation.stress``) fixes them. Strengths in pixels are meant at the
image size the model sees.

All take and return (B, 1, H, W) float tensors in [0, 1]; ``strength`` arguments are
(B,) tensors or floats, one value per image.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F


def _per_image(value: torch.Tensor | float, images: torch.Tensor) -> torch.Tensor:
    """``value`` as a (B,) tensor on the images' device and dtype."""
    value = torch.as_tensor(value, dtype=images.dtype, device=images.device)
    return value.expand(images.shape[0]) if value.dim() == 0 else value


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """Blur each image with its own Gaussian of standard deviation ``sigma`` pixels (0 = unchanged).

    A separable convolution with one kernel per image (grouped over the batch); reflected
    borders, so the image edge does not darken.
    """
    sigma = _per_image(sigma, images).clamp_min(0)
    if not bool((sigma > 0).any()):
        return images
    batch, channels, height, width = images.shape
    radius = max(1, int(math.ceil(3 * float(sigma.max()))))
    radius = min(radius, (min(height, width) - 1) // 2)
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    # sigma 0 gives a delta kernel (exp(-inf) = 0 off-centre), i.e. the image unchanged.
    kernel = torch.exp(-0.5 * (offsets[None] / sigma[:, None].clamp_min(1e-6)) ** 2)  # (B, K)
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(channels, 0)  # (B*C, K)
    flat = images.reshape(1, batch * channels, height, width)
    flat = F.pad(flat, (radius, radius, radius, radius), mode="reflect")
    flat = F.conv2d(flat, kernel[:, None, :, None], groups=batch * channels)  # along height
    flat = F.conv2d(flat, kernel[:, None, None, :], groups=batch * channels)  # along width
    return flat.reshape(batch, channels, height, width)


def unsharp_mask(images: torch.Tensor, amount: torch.Tensor | float, sigma: float = 1.5) -> torch.Tensor:
    """Sharpen: ``image + amount * (image - blurred image)``, clamped to [0, 1] (0 = unchanged).

    The edge enhancement that X-ray consoles apply before export, at one radius ``sigma``.
    """
    amount = _per_image(amount, images)
    if not bool((amount != 0).any()):
        return images
    blurred = gaussian_blur(images, sigma)
    return (images + amount.view(-1, 1, 1, 1) * (images - blurred)).clamp(0, 1)


def resample(images: torch.Tensor, factor: torch.Tensor | float) -> torch.Tensor:
    """Shrink each image by ``factor`` (in (0, 1]; 1 = unchanged) with area averaging, then enlarge back.

    What an export at a lower resolution followed by the model's resize does: detail finer
    than the smaller image is lost, and bilinear upsampling leaves it soft.
    """
    factor = _per_image(factor, images)
    height, width = images.shape[-2:]
    out = images.clone()
    for index, value in enumerate(factor.tolist()):
        if value >= 1:
            continue
        small = (max(2, round(height * value)), max(2, round(width * value)))
        shrunk = F.interpolate(images[index:index + 1], size=small, mode="area")
        out[index:index + 1] = F.interpolate(shrunk, size=(height, width), mode="bilinear", align_corners=False)
    return out


def gaussian_noise(images: torch.Tensor, std: torch.Tensor | float, generator: torch.Generator) -> torch.Tensor:
    """Add zero-mean Gaussian noise of standard deviation ``std`` (intensity units) per image, clamped."""
    std = _per_image(std, images)
    if not bool((std > 0).any()):
        return images
    noise = torch.randn(images.shape, generator=generator, device=generator.device).to(images)
    return (images + noise * std.view(-1, 1, 1, 1)).clamp(0, 1)


def jpeg(images: torch.Tensor, quality: torch.Tensor | float) -> torch.Tensor:
    """Re-encode each image as an 8-bit JPEG at ``quality`` (1-100; >100 = unchanged) and decode it.

    Encoding runs on the CPU (libjpeg through OpenCV); the result returns to the images' device.
    """
    quality = _per_image(quality, images)
    out = images.clone()
    for index, value in enumerate(quality.tolist()):
        if value > 100:
            continue
        pixels = (images[index, 0].detach().cpu() * 255).round().clamp(0, 255).to(torch.uint8).numpy()  # (H, W)
        ok, encoded = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, int(round(min(max(value, 1), 100)))])
        if not ok:
            raise RuntimeError(f"OpenCV could not encode a {pixels.shape} image as JPEG")
        decoded = cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE)
        out[index, 0] = torch.from_numpy(np.asarray(decoded)).to(images.device, images.dtype) / 255.0
    return out


def gamma(images: torch.Tensor, value: torch.Tensor | float) -> torch.Tensor:
    """``image ** value`` per image: a tone curve (< 1 brightens, > 1 darkens the mid-tones)."""
    return images.clamp(0, 1).pow(_per_image(value, images).view(-1, 1, 1, 1))


def contrast(images: torch.Tensor, factor: torch.Tensor | float) -> torch.Tensor:
    """Scale each image's deviations from its own mean by ``factor``, clamped to [0, 1]."""
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return ((images - mean) * _per_image(factor, images).view(-1, 1, 1, 1) + mean).clamp(0, 1)


def affine(images: torch.Tensor, *, scale: float = 1.0, shift: tuple[float, float] = (0.0, 0.0),
           rotation: float = 0.0) -> torch.Tensor:
    """One fixed framing change for the whole batch, filled with the nearest edge.

    Args:
        scale: > 1 zooms in (the anatomy looks larger, edges leave the frame), < 1 zooms out.
        shift: content moved right and down by these fractions of the width and height.
        rotation: degrees, counter-clockwise.
    """
    angle = math.radians(rotation)
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    # affine_grid maps output to input coordinates in [-1, 1]: moving content by s of the width is -2s there.
    theta = torch.tensor([[cos, -sin, -2 * shift[0]], [sin, cos, -2 * shift[1]]], dtype=images.dtype,
                         device=images.device).expand(images.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
