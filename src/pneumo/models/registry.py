"""A plain dict of model builders, filled by ``register_model``."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class ModelSpec:
    """How to build one model family, and where its parts are.

    Attributes:
        name: registry name.
        build: ``build(num_classes, pretrained) -> nn.Module``.
        classifier: attribute path of the classification head (trained during a frozen warm-up).
        cam_layer: attribute path of the layer Grad-CAM looks at (the last convolutional block).
        description: one line for ``--help`` and model cards.
    """

    name: str
    build: Callable[[int, str | None], nn.Module]
    classifier: str
    cam_layer: str
    description: str


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} is registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """The spec of a registered model; an unknown name gets a did-you-mean message."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"Unknown model {name!r}.{hint} Available models: {', '.join(list_models())}.") from None


def create_model(name: str, *, num_classes: int = 3, pretrained: str | None = None) -> nn.Module:
    """Build a registered model.

    Args:
        name: a name from ``list_models()``.
        num_classes: outputs of the classification head.
        pretrained: None (random init), ``"imagenet"`` (torchvision's download, needs internet)
            or the path of an ImageNet state_dict file in torchvision's layout.

    Raises:
        ValueError: unknown name, or pretrained weights for a model that has none.
        ModelFileError: the pretrained file is missing or does not fit the model.
    """
    if num_classes < 2:
        raise ValueError(f"The 'num_classes' of create_model must be >= 2. Got {num_classes} instead.")
    return get_spec(name).build(num_classes, pretrained)

