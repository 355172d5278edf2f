"""Batched model inference on prepared uint8 images: logits, and the features entering given layers."""

from __future__ import annotations


import numpy as np
import torch
from torch import nn

from pneumo.models.novelty import FeatureTap

@torch.inference_mode()
def logits_and_features(model: nn.Module, images: np.ndarray, layers: list[str] = (), *, batch_size: int = 128
                        ) -> tuple[np.ndarray, list[np.ndarray]]:
    """Logits (N, K) for uint8 images (N, S, S), on the model's device, and the features that enter each of
    ``layers`` [(N, D_i)]; scaling by 1/255 is done here.

    Batches go in as channels_last; a model whose weights are too (``load_bundle`` does that) runs fastest.
    """
    model.eval()
    device = next(model.parameters()).device
    tap = FeatureTap(model, list(layers))
    logits: list[np.ndarray] = []
    features: list[list[np.ndarray]] = [[] for _ in tap.layers]
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size])).to(device)
        batch = batch.float().div_(255)[:, None].contiguous(memory_format=torch.channels_last)
        with tap:
            # forward, not the call: a model compiled in place for training (--compile) would otherwise run
            # its compiled graph, which need not call the hooked modules as modules.
            logits.append(model.forward(batch).float().cpu().numpy())
        for store, layer_features in zip(features, tap.features):
            store.append(layer_features.float().cpu().numpy())
    if not logits:
        return np.zeros((0, 3), np.float32), [np.zeros((0, 0), np.float32) for _ in tap.layers]
    return np.concatenate(logits), [np.concatenate(f) for f in features]


def predict_logits(model: nn.Module, images: np.ndarray, *, batch_size: int = 128) -> np.ndarray:
    """Logits (N, classes) for uint8 images (N, S, S) (see ``logits_and_features``)."""
    return logits_and_features(model, images, batch_size=batch_size)[0]


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Softmax of logits / temperature, computed stably in float64."""
    scaled = np.asarray(logits, np.float64) / temperature
    scaled -= scaled.max(1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(1, keepdims=True)
