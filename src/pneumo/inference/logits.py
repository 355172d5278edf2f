"""Batched model inference on prepared uint8 images."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


@torch.inference_mode()
def predict_logits(model: nn.Module, images: np.ndarray, *, batch_size: int = 128) -> np.ndarray:
    """Logits (N, classes) for uint8 images (N, S, S), on the model's device; scaling by 1/255 is done here.

    Batches go in as channels_last; a model whose weights are too (``load_bundle`` does that) runs fastest.
    """
    model.eval()
    device = next(model.parameters()).device
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size])).to(device).float().div_(255.0)
        outputs.append(model(batch[:, None].contiguous(memory_format=torch.channels_last)).float().cpu().numpy())
    return np.concatenate(outputs) if outputs else np.zeros((0, 3), np.float32)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Softmax of logits / temperature, computed stably in float64."""
    scaled = np.asarray(logits, np.float64) / temperature
    scaled -= scaled.max(1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(1, keepdims=True)
