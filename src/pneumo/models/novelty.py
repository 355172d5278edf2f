"""The novelty check as a module: novelty scores from the features that enter a model's classification head.

The check itself is explained in ``pneumo.inference.novelty`` (how it is fitted and read); this module
holds what travels in a bundle and in the ONNX graph: ``Novelty`` (the fitted tensors and threshold),
``ScoredModel`` (a model and its check as one module) and ``FeatureTap`` (the hooks that read the
features during a forward pass).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

import torch
from torch import nn

from pneumo.models.ensemble import ENSEMBLE_NAME
from pneumo.models.registry import get_spec

__all__ = ["FeatureTap", "Novelty", "ScoredModel", "feature_layers"]


class FeatureTap:
    """Records the input of each of ``layers`` (module paths, flattened to (B, D_i)) during a forward pass,
    the first call of each only (for an ensemble's test-time views, the image as given: its first view).

    The hooks sit on modules that threads may share; they record only the calls of the thread that
    entered the tap, so another thread's forward pass through the same model is never taken for this one.

        with FeatureTap(model, ["head"]) as tap:
            logits = model(images)
        features = tap.features  # [(B, D_i) per layer]
    """

    def __init__(self, model: nn.Module, layers: list[str]):
        self.layers = [model.get_submodule(path) for path in layers]
        self._captured: dict[int, torch.Tensor] = {}
        self._handles: list = []
        self._thread: int | None = None

    def __enter__(self) -> "FeatureTap":
        self._captured.clear()
        self._thread = threading.get_ident()
        self._handles = [layer.register_forward_pre_hook(self._hook(index)) for index, layer in enumerate(self.layers)]
        return self

    def __exit__(self, *exc_info) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _hook(self, index: int):
        def record(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            if threading.get_ident() == self._thread:
                self._captured.setdefault(index, inputs[0].flatten(1))
        return record

    @property
    def features(self) -> list[torch.Tensor]:
        missing = [index for index in range(len(self.layers)) if index not in self._captured]
        if missing:
            raise RuntimeError(f"The forward pass did not reach feature layers {missing}.")
        return [self._captured[index] for index in range(len(self.layers))]


def feature_layers(model_name: str, model: nn.Module) -> list[str]:
    """The paths of the modules whose inputs are the features: the classification head of a registered model
    (``ModelSpec.classifier``), or of each member of an ensemble."""
    if model_name == ENSEMBLE_NAME:
        return [f"members.{index}.{get_spec(name).classifier}" for index, name in enumerate(model.member_names)]
    return [get_spec(model_name).classifier]


class Novelty(nn.Module):
    """Novelty scores from feature-layer outputs, and the threshold above which an image is flagged.

    Args:
        layers: the paths of the modules whose inputs are the features (``feature_layers``).
        means: per feature layer, the training features' mean (D_i,).
        projections: per feature layer, (D_i, k_i): principal directions divided by the square root of
            their variance, so that projected training features have unit variance.
        threshold: novelty above which an image is flagged.
        description: how it was fitted (false-alarm rate, image counts, sources); kept in the bundle metadata.
    """

    def __init__(self, layers: list[str], means: list[torch.Tensor], projections: list[torch.Tensor], *,
                 threshold: float, description: dict[str, Any] | None = None):
        super().__init__()
        if not means or not len(layers) == len(means) == len(projections):
            raise ValueError(f"Novelty needs one mean and one projection per feature layer; got {len(layers)} layers, "
                             f"{len(means)} means and {len(projections)} projections.")
        self.layer_paths = list(layers)
        for index, (mean, projection) in enumerate(zip(means, projections)):
            self.register_buffer(f"mean_{index}", torch.as_tensor(mean, dtype=torch.float32))
            self.register_buffer(f"projection_{index}", torch.as_tensor(projection, dtype=torch.float32))
        self.threshold = float(threshold)
        self.description = dict(description or {})

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:  # [(B, D_i)] -> (B,)
        per_layer = [((f.float() - getattr(self, f"mean_{i}")) @ getattr(self, f"projection_{i}")).pow(2).mean(1)
                     for i, f in enumerate(features)]  # (B,) per layer
        return torch.stack(per_layer).mean(0)

    @torch.inference_mode()
    def score(self, features: list[np.ndarray]) -> np.ndarray:
        """(N,) novelty from numpy features [(N, D_i)], as ``logits_and_features`` returns them."""
        if not len(features[0]):
            return np.zeros(0, np.float32)
        return self([torch.from_numpy(f) for f in features]).numpy()

    def metadata(self) -> dict[str, Any]:
        """What the bundle metadata records: the threshold, the shapes needed to rebuild it, how it was fitted."""
        return {**self.description, "threshold": self.threshold, "layers": self.layer_paths,
                "shapes": [list(getattr(self, f"projection_{i}").shape) for i in range(len(self.layer_paths))]}

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> "Novelty":
        """Rebuild from a bundle's ``novelty`` tensors and metadata."""
        layers = len(metadata["shapes"])
        description = {k: v for k, v in metadata.items() if k not in ("threshold", "layers", "shapes", "sha256")}
        return cls(metadata["layers"], [tensors[f"mean_{i}"] for i in range(layers)],
                   [tensors[f"projection_{i}"] for i in range(layers)], threshold=metadata["threshold"],
                   description=description)

class ScoredModel(nn.Module):
    """A model and its novelty check as one module: images -> (logits, novelty), for the ONNX export."""

    def __init__(self, model: nn.Module, novelty: Novelty):
        super().__init__()
        self.model, self.novelty = model, novelty

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # (B, 1, S, S) -> (B, K), (B,)
        with FeatureTap(self.model, self.novelty.layer_paths) as tap:
            logits = self.model(images)
        return logits, self.novelty(tap.features)
