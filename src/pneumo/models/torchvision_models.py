"""torchvision classifiers adapted to one-channel X-rays.

The gray image is repeated to three channels and normalized with ImageNet mean/std inside
the model. ImageNet weights come from a state_dict file (offline) or torchvision's download.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn

from pneumo.errors import ModelFileError
from pneumo.models.registry import ModelSpec, register_model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class GrayImageNet(nn.Module):
    """Wraps an RGB classifier: (B, 1, H, W) in [0, 1] -> repeat to RGB -> normalize -> net.

    ``mean`` and ``std`` are those the ImageNet weights were trained with (torchvision's by default).
    """

    def __init__(self, net: nn.Module, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x):  # x: (B, 1, H, W)
        return self.net((x.expand(-1, 3, -1, -1) - self.mean) / self.std)  # (B, num_classes)


def _replace_head(net: nn.Module, classifier: str, num_classes: int) -> None:
    """Swap the last nn.Linear at or under ``net.<classifier>`` for one with ``num_classes`` outputs."""
    owner_path, _, attribute = classifier.rpartition(".")
    owner, name = net.get_submodule(owner_path) if owner_path else net, attribute
    for module_path, module in net.get_submodule(classifier).named_modules(prefix=classifier):
        if isinstance(module, nn.Linear):
            owner_path, _, name = module_path.rpartition(".")
            owner = net.get_submodule(owner_path) if owner_path else net
    linear = getattr(owner, name)
    if not isinstance(linear, nn.Linear):
        raise ValueError(f"no Linear layer at or under {classifier!r}")
    setattr(owner, name, nn.Linear(linear.in_features, num_classes))


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state_dict file read weights-only (no code runs); a clear error when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: pretrained weights file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ModelFileError(f"{path}: not a PyTorch state_dict file ({type(error).__name__}: {error})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFileError(f"{path}: expected a state_dict (a dict of tensors), got {type(state).__name__}")
    return state


def load_state_dict_file(net: nn.Module, path: str | Path, model_name: str,
                         state: dict[str, torch.Tensor] | None = None) -> None:
    """Load an ImageNet state_dict strictly; a mismatch names the missing/unexpected keys.

    ``state``, when given, is the file's content already read (and renamed) by the caller.
    """
    path = Path(path)
    if state is None:
        state = read_state_dict(path)
    missing, unexpected, wrong = [], [], []
    expected = net.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    wrong = [f"{key} {tuple(state[key].shape)} != {tuple(value.shape)}"
             for key, value in expected.items() if key in state and state[key].shape != value.shape]
    if missing or unexpected or wrong:
        def listing(keys):
            return ", ".join(keys[:8]) + (f" and {len(keys) - 8} more" if len(keys) > 8 else "")
        parts = [f"{len(missing)} missing keys ({listing(missing)})" if missing else "",
                 f"{len(unexpected)} unexpected keys ({listing(unexpected)})" if unexpected else "",
                 f"{len(wrong)} keys of the wrong shape ({listing(wrong)})" if wrong else ""]
        raise ModelFileError(
            f"{path}: does not fit the {model_name} ImageNet layout: " + "; ".join(p for p in parts if p)
            + f". Pass the ImageNet state_dict of {model_name}.")
    net.load_state_dict(state, strict=True)


def torchvision_builder(name: str, classifier: str):
    """A builder for ``torchvision.models.<name>`` with a new ``num_classes`` head."""

    def build(num_classes: int, pretrained: str | None) -> nn.Module:
        constructor = getattr(torchvision.models, name)
        if pretrained == "imagenet":
            net = constructor(weights="DEFAULT")  # downloads: needs internet
        else:
            net = constructor(weights=None)
            if pretrained:
                load_state_dict_file(net, pretrained, name)
        _replace_head(net, classifier, num_classes)
        return GrayImageNet(net)

    return build


def register_torchvision(name: str, *, classifier: str, cam_layer: str, description: str) -> None:
    """Register ``torchvision.models.<name>``: one line per classifier."""
    register_model(ModelSpec(name, torchvision_builder(name, classifier), classifier=f"net.{classifier}",
                             cam_layer=f"net.{cam_layer}", description=description))


register_torchvision("mobilenet_v2", classifier="classifier", cam_layer="features.18",
                     description="MobileNetV2 (torchvision), ImageNet-pretrained when given weights")
register_torchvision("mobilenet_v3_small", classifier="classifier", cam_layer="features.12",
                     description="MobileNetV3-Small (torchvision)")
register_torchvision("mobilenet_v3_large", classifier="classifier", cam_layer="features.16",
                     description="MobileNetV3-Large (torchvision)")
register_torchvision("resnet18", classifier="fc", cam_layer="layer4", description="ResNet-18 (torchvision)")
register_torchvision("efficientnet_b0", classifier="classifier", cam_layer="features.8",
                     description="EfficientNet-B0 (torchvision)")
