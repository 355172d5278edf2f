"""Grad-CAM heatmaps (Selvaraju et al. 2017) through the ``grad-cam`` package.

That package is imported when a heatmap is first asked for: it pulls in scikit-learn and pandas (about 4 s and
200 MB), which a server or a batch run that answers without heatmaps never needs.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import nn

from pneumo.models import get_spec
from pneumo.models.ensemble import Ensemble


def gradcam(model: nn.Module, model_name: str, images: np.ndarray, classes: list[int], *,
            member: int | None = None) -> np.ndarray:
    """Heatmaps in [0, 1] of where ``model`` looked for ``classes``.

    Args:
        model: a model built by ``create_model(model_name)``, or an ``Ensemble``.
        model_name: its registry name (tells which layer to look at); ignored for an ensemble.
        images: (N, S, S) uint8 images as the model sees them.
        classes: the class to explain for each image.
        member: for an ensemble, the one member to explain; None averages all members' heatmaps
            (each member at its own input size, its heatmap resized back to S).

    Returns:
        (N, S, S) float32 heatmaps.

    Raises:
        ValueError: ``member`` out of range, or given for a model that is not an ensemble.
    """
    inputs = torch.from_numpy(np.ascontiguousarray(images)).float().div(255.0)[:, None]  # (N, 1, S, S)
    if not isinstance(model, Ensemble):
        if member is not None:
            raise ValueError(f"The Grad-CAM 'member' (--cam-member) is for ensembles; {model_name} is a single model. "
                         f"Got {member} instead.")
        return _gradcam(model, get_spec(model_name).cam_layer, inputs, classes)
    chosen = range(len(model.members)) if member is None else [member]
    if member is not None and not 0 <= member < len(model.members):
        raise ValueError(f"The Grad-CAM 'member' (--cam-member) must be in 0..{len(model.members) - 1}. "
                         f"Got {member} instead.")
    side = images.shape[-1]
    heatmaps = []
    for index in chosen:
        name = model.member_names[index]
        with torch.no_grad():
            member_inputs = model.member_input(inputs, index)
        heat = _gradcam(model.members[index], get_spec(name).cam_layer, member_inputs, classes)  # (N, s, s)
        heatmaps.append(np.stack([cv2.resize(h, (side, side), interpolation=cv2.INTER_LINEAR) for h in heat]))
    return np.mean(heatmaps, axis=0).astype(np.float32)


def _gradcam(model: nn.Module, layer_name: str, inputs: torch.Tensor, classes: list[int]) -> np.ndarray:
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model.eval()
    with GradCAM(model=model, target_layers=[model.get_submodule(layer_name)]) as cam:
        heatmaps = cam(input_tensor=inputs, targets=[ClassifierOutputTarget(c) for c in classes])
    return heatmaps.astype(np.float32)


def overlay(image: np.ndarray, heatmap: np.ndarray, *, side: int = 384, caption: str = "") -> np.ndarray:
    """An RGB uint8 picture: the original (left) beside the heatmap over it (right), with the
    heatmap's colour scale below and ``caption`` above when given."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    gray = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA if side < image.shape[0] else cv2.INTER_LINEAR)
    rgb = np.repeat(gray[:, :, None], 3, axis=2).astype(np.float32) / 255.0
    heat = cv2.resize(heatmap, (side, side), interpolation=cv2.INTER_LINEAR)
    blended = show_cam_on_image(rgb, heat, use_rgb=True, image_weight=0.6)
    gap = np.full((side, 8, 3), 255, np.uint8)
    picture = np.concatenate([(rgb * 255).astype(np.uint8), gap, blended], axis=1)
    parts = [_text_strip(caption, picture.shape[1])] if caption else []
    return np.concatenate([*parts, picture, _colour_scale(picture.shape[1], side)], axis=0)


def _text_strip(text: str, width: int, *, line_height: int = 22, scale: float = 0.5) -> np.ndarray:
    """``text`` on white, wrapped at word boundaries to fit ``width`` pixels."""
    lines, current = [], ""
    for word in text.split():
        candidate = f"{current} {word}".strip()
        if current and cv2.getTextSize(candidate, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] > width - 16:
            lines.append(current)
            candidate = word
        current = candidate
    lines.append(current)
    strip = np.full((line_height * len(lines) + 8, width, 3), 255, np.uint8)
    for number, line in enumerate(lines, 1):
        cv2.putText(strip, line, (8, line_height * number), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return strip


def _colour_scale(width: int, side: int, *, height: int = 30) -> np.ndarray:
    """The heatmap's colours from low (left) to high Grad-CAM weight (right), under the overlay half."""
    strip = np.full((height, width, 3), 255, np.uint8)
    ramp = cv2.applyColorMap(np.linspace(0, 255, side).astype(np.uint8)[None].repeat(10, 0), cv2.COLORMAP_JET)
    left = width - side
    strip[4:14, left:] = cv2.cvtColor(ramp, cv2.COLOR_BGR2RGB)  # show_cam_on_image uses this colormap
    for text, x in (("low", left), ("high Grad-CAM", width - 110)):
        cv2.putText(strip, text, (x, height - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return strip


def png_bytes(rgb: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return encoded.tobytes()
