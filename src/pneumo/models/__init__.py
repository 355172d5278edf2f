"""Model registry: ``create_model(name)`` is the one way to build a network.

Every model takes (B, 1, H, W) float images scaled to [0, 1] and returns (B, num_classes)
logits; any normalization it needs (ImageNet mean/std for pretrained backbones) happens
inside, so exported ONNX graphs and served models see the same input as training.
"""

from pneumo.models.registry import ModelSpec, create_model, get_spec, list_models, register_model
from pneumo.models import cnn as _cnn  # noqa: F401  (registers the models)
from pneumo.models import torchvision_models as _torchvision_models  # noqa: F401
from pneumo.models import efficientnet_lite as _efficientnet_lite  # noqa: F401

__all__ = ["ModelSpec", "create_model", "get_spec", "list_models", "register_model"]
