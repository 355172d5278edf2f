"""The model bundle ``model.pt``: weights plus everything needed to use them, as data.

A bundle is a plain dict of tensors and strings that loads with
``torch.load(path, weights_only=True)`` (no arbitrary unpickling):

    {"format": "pneumo-bundle", "version": 1, "metadata": "<JSON>", "state_dict": {name: tensor},
     "novelty": {name: tensor}}  # optional

The metadata holds the model name, class names, preprocessing (size, grayscale, scaling,
normalization), the training summary, the calibration temperature, the operating point, the
novelty check's threshold and the sha256 of the weights and of the novelty tensors.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pneumo.errors import ModelFileError
from pneumo.files import atomic_path
from pneumo.models.novelty import Novelty
from pneumo.labels import CLASSES
from pneumo.models.info import ModelInfo
from pneumo.models.registry import create_model

FORMAT = "pneumo-bundle"
VERSION = 1
BUNDLE_NAME = "model.pt"


@dataclass
class Bundle:
    """A loaded model with its metadata."""

    model: nn.Module
    metadata: dict[str, Any]
    path: Path | None = None
    file_sha256: str = field(default="")
    novelty: Novelty | None = None  # the check that an image resembles the training X-rays (pneumo.inference.novelty)

    @cached_property
    def info(self) -> ModelInfo:
        """The typed view of the metadata."""
        return ModelInfo.of(self.metadata)

    @property
    def classes(self) -> list[str]:
        return list(self.info.classes)

    @property
    def size(self) -> int:
        return self.info.size

    @property
    def temperature(self) -> float:
        return self.info.temperature

    @property
    def model_id(self) -> str:
        return self.info.model_id


def weights_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """A hash of the weights themselves (names, shapes, values), independent of the file format."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def preprocessing(size: int) -> dict[str, Any]:
    return {
        "size": size,
        "grayscale": True,
        "resize": "cv2.resize to size x size (INTER_AREA when shrinking), aspect ratio not kept",
        "scale": "1/255",
        "normalization": "inside the model (the mean/std its ImageNet weights were trained with)",
        "input": "float32 (B, 1, size, size) in [0, 1]",
    }


def save_bundle(path: str | Path, model: nn.Module, *, model_name: str, size: int, novelty: Novelty | None = None,
                **extra: Any) -> dict[str, Any]:
    """Write ``model`` and its metadata atomically; returns the metadata.

    Args:
        path: the ``.pt`` file to write.
        model: a model built by ``create_model(model_name)``.
        model_name: its registry name.
        size: input side in pixels.
        novelty: its novelty check, fitted on these weights' features; without one, the bundle has none.
        **extra: further metadata (``id``, ``training``, ``temperature``, ``operating_point``, ...).

    Raises:
        ValueError: a novelty check fitted on other weights.
    """
    # Always the standard layout, whatever the model was trained or run in (channels_last), so
    # that the file is the same for the same weights and loads anywhere, safetensors included.
    state = {name: tensor.detach().cpu().clone(memory_format=torch.contiguous_format)
             for name, tensor in model.state_dict().items()}
    metadata = {
        "model_name": model_name,
        "classes": list(CLASSES),
        "preprocessing": preprocessing(size),
        "weights_sha256": weights_sha256(state),
        "temperature": 1.0,
        **extra,
    }
    content = {"format": FORMAT, "version": VERSION, "state_dict": state}
    if novelty is not None:
        if novelty.description.get("weights_sha256") != metadata["weights_sha256"]:
            raise ValueError("The novelty check was fitted on other weights than these; fit it again on these "
                             "(pneumo.inference.novelty.fit_novelty).")
        content["novelty"] = {name: tensor.detach().cpu().contiguous() for name, tensor in novelty.state_dict().items()}
        metadata["novelty"] = {**novelty.metadata(), "sha256": weights_sha256(content["novelty"])}
    text = json.dumps(metadata)
    # The metadata decides answers too (temperature, operating point, conformal scores): hashed like the weights.
    content["metadata_sha256"] = hashlib.sha256(text.encode()).hexdigest()
    with atomic_path(path) as temporary:
        torch.save({**content, "metadata": text}, temporary)
    return metadata


def carried_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """A bundle's metadata without what ``save_bundle`` derives itself: to save new weights or calibration
    under the same description (``save_bundle(path, model, model_name=..., size=..., **carried_metadata(m))``).

    The novelty check's record is left out too: it travels with its tensors, as ``save_bundle(novelty=...)``.
    """
    return {key: value for key, value in metadata.items()
            if key not in ("model_name", "classes", "preprocessing", "weights_sha256", "novelty")}


def model_from_metadata(metadata: dict[str, Any]) -> nn.Module:
    """The untrained network a bundle's metadata describes (a registered model, or an ensemble of them)."""
    from pneumo.models.ensemble import ENSEMBLE_NAME, build_ensemble

    if metadata["model_name"] == ENSEMBLE_NAME:
        return build_ensemble(metadata)
    return create_model(metadata["model_name"], num_classes=len(metadata["classes"]))


def resolve_bundle_path(path: str | Path) -> Path:
    """A bundle file from a path to it, to a run folder or model folder, or from a shipped model's name."""
    from pneumo.paths import resolve_model, shipped_models

    given = resolve_model(path)
    path = given / BUNDLE_NAME if given.is_dir() else given
    if not path.is_file():
        what = (f"{path}: no model bundle here" if given.exists() else
                f"{given}: no such file or folder, and no shipped model of that name")
        raise ModelFileError(f"{what}; pass a model.pt file, a run folder, a model folder or the name of a shipped "
                             f"model ({', '.join(shipped_models()) or 'none installed'})")
    return path


def load_bundle(path: str | Path) -> Bundle:
    """Load a bundle (or run folder) safely, rebuild the model and load its weights strictly.

    Raises:
        ModelFileError: missing file, not a pneumo bundle, or weights that do not fit.
    """
    path = resolve_bundle_path(path)
    raw = path.read_bytes()
    try:
        import io

        content = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as error:
        raise ModelFileError(f"{path}: not a loadable pneumo bundle ({type(error).__name__}: {error})") from None
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a pneumo model bundle (no 'format: {FORMAT}' entry)")
    if content.get("version", 0) > VERSION:
        raise ModelFileError(f"{path}: bundle version {content['version']} is newer than this pneumo ({VERSION}); upgrade")
    sealed = content.get("metadata_sha256")  # absent from bundles written before metadata was hashed
    if sealed is not None and hashlib.sha256(str(content.get("metadata")).encode()).hexdigest() != sealed:
        raise ModelFileError(f"{path}: its metadata (temperature, operating point, ...) does not match the hash recorded "
                             "in it; the file was altered or damaged. Restore it (git checkout, or retrain) rather than "
                             "use it")
    try:
        metadata = json.loads(content["metadata"])
    except (KeyError, TypeError, json.JSONDecodeError):
        raise ModelFileError(f"{path}: its metadata is missing or not JSON; the file was altered or damaged") from None
    recorded = metadata.get("weights_sha256")
    if recorded and weights_sha256(content["state_dict"]) != recorded:
        raise ModelFileError(f"{path}: its weights do not match the weights_sha256 recorded in it; the file was altered "
                             "or damaged. Restore it (git checkout, or retrain) rather than use it")
    try:
        model = model_from_metadata(metadata)
        model.load_state_dict(content["state_dict"], strict=True)
    except (RuntimeError, ValueError, KeyError) as error:
        raise ModelFileError(f"{path}: weights do not fit model {metadata.get('model_name')!r} ({error})") from None
    novelty = None
    if "novelty" in content:
        if weights_sha256(content["novelty"]) != metadata.get("novelty", {}).get("sha256"):
            raise ModelFileError(f"{path}: its novelty-check tensors do not match the sha256 recorded in it; the file "
                                 "was altered or damaged. Restore it (git checkout, or retrain) rather than use it")
        novelty = Novelty.from_state(content["novelty"], metadata["novelty"])
        if novelty.description.get("weights_sha256") != metadata.get("weights_sha256"):
            raise ModelFileError(f"{path}: its novelty check was fitted on other weights; the file was altered. "
                                 "Restore it (git checkout, or retrain) rather than use it")
    elif "novelty" in metadata:
        raise ModelFileError(f"{path}: its metadata describes a novelty check but the file holds none; the file was "
                             "altered or damaged. Restore it (git checkout, or retrain) rather than use it")
    # Weights in channels_last like the batches of predict_logits: about 1.7x faster for MobileNetV2
    # on the 2-core CPU. Done once here, not per prediction, and outside inference mode, where
    # remade parameters could never take part in autograd again (Grad-CAM).
    model.to(memory_format=torch.channels_last).eval()
    return Bundle(model, metadata, path, hashlib.sha256(raw).hexdigest(), novelty)
