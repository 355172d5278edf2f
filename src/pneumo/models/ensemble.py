"""Ensembles: one model that averages the calibrated probabilities of several trained models.

An ``Ensemble`` is an ``nn.Module`` like any registered model: it takes (B, 1, S, S) images in
[0, 1] at the largest member input size S and returns (B, classes) logits, so it is saved as a bundle,
exported to ONNX, served, evaluated and adapted (AdaBN) without special cases. Inside, each member
sees the image resized to its own input size by fixed area-averaging matrices (the weights of
OpenCV's ``INTER_AREA`` when shrinking, and plain matrix products in the ONNX graph; a member
smaller than the ensemble's input thus sees the file resized twice, to S and then to its size, which
equals one resize only when S is a whole multiple of it), its logits are divided by its own
validation temperature, and the members' probabilities are averaged. The returned logits are the log
of that average, so the bundle's own temperature (fitted on validation after averaging) applies on
top as for any model.

Optional test-time augmentation averages over views of the image too: zoomed copies made by fixed
bilinear matrices (edges repeated, as the stress battery's framing changes), so that the ONNX graph
holds them as well.

The members are described in the bundle metadata (``ensemble.members``: model name, input size,
temperature, id, weights hash; ``ensemble.views``: the zoom of each view), which is all
``build_ensemble`` needs to rebuild the module before the weights are loaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from pneumo.config import flat_config
from pneumo.models.registry import create_model

__all__ = ["ENSEMBLE_NAME", "Ensemble", "area_resize_matrix", "build_ensemble", "check_members", "ensemble_from_bundles",
           "member_description", "same_split", "split_identity", "zoom_matrix"]

ENSEMBLE_NAME = "ensemble"
COMBINATION = ("mean of the members' temperature-scaled probabilities (each member at its own input size, "
               "resized inside the model by area averaging; over every test-time view, if any); logits = log of "
               "that mean")


def area_resize_matrix(source: int, target: int) -> np.ndarray:
    """The (target, source) matrix that area-averages a line of ``source`` pixels down to ``target``.

    Row i weights each source pixel by the share of it that falls in the i-th of ``target``
    equal cells, as OpenCV's INTER_AREA does when shrinking.

    Raises:
        ValueError: ``target`` larger than ``source`` (members never see a larger image than given).
    """
    if not 0 < target <= source:
        raise ValueError(f"The 'target' size must be in 1..{source} (area averaging only shrinks). Got {target} instead.")
    edges = np.arange(target + 1) * source / target  # cell boundaries in source pixel units
    pixels = np.arange(source)
    # Overlap of cell i = [edges[i], edges[i+1]) with pixel j = [j, j+1).
    overlap = np.clip(np.minimum(edges[1:, None], pixels[None] + 1) - np.maximum(edges[:-1, None], pixels[None]), 0, None)
    return (overlap / overlap.sum(1, keepdims=True)).astype(np.float32)


def zoom_matrix(size: int, scale: float) -> np.ndarray:
    """The (size, size) matrix that zooms a line of pixels about its centre by ``scale`` (> 1 in, < 1 out).

    Bilinear, with coordinates clamped to the edge: applied to rows and columns it equals
    ``acquisition.affine(images, scale=scale)`` (grid_sample, border padding, align_corners=False).
    """
    if scale <= 0:
        raise ValueError(f"The zoom 'scale' must be > 0. Got {scale} instead.")
    centres = (2 * np.arange(size) + 1) / size - 1  # output pixel centres in [-1, 1]
    source = np.clip(((centres / scale + 1) * size - 1) / 2, 0, size - 1)  # input pixel coordinates
    low = np.floor(source).astype(int)
    high = np.minimum(low + 1, size - 1)
    weight = source - low
    matrix = np.zeros((size, size), np.float64)
    np.add.at(matrix, (np.arange(size), low), 1 - weight)
    np.add.at(matrix, (np.arange(size), high), weight)
    return matrix.astype(np.float32)


class Ensemble(nn.Module):
    """The average of ``members``' temperature-scaled probabilities, as logits.

    Args:
        members: the member networks (built by ``create_model``).
        names: each member's registry name (Grad-CAM finds its layer by it).
        sizes: each member's input side in pixels.
        temperatures: each member's validation temperature.
        views: zoom of each test-time view, the first 1.0 (the image as given); probabilities are averaged
            over views and members.
    """

    def __init__(self, members: list[nn.Module], *, names: list[str], sizes: list[int], temperatures: list[float],
                 views: tuple[float, ...] = (1.0,)):
        super().__init__()
        if not members or not len(members) == len(names) == len(sizes) == len(temperatures):
            raise ValueError(f"An ensemble needs one name, size and temperature per member; got {len(members)} members, "
                             f"{len(names)} names, {len(sizes)} sizes and {len(temperatures)} temperatures.")
        self.members = nn.ModuleList(members)
        self.member_names = list(names)
        self.sizes = [int(s) for s in sizes]
        self.size = max(self.sizes)
        # Fixed, not learned: rebuilt from the metadata, so kept out of the state_dict (persistent=False).
        self.register_buffer("temperatures", torch.tensor(temperatures, dtype=torch.float32), persistent=False)
        for index, size in enumerate(self.sizes):
            if size != self.size:
                self.register_buffer(f"resize_{index}", torch.from_numpy(area_resize_matrix(self.size, size)),
                                     persistent=False)
        if not views or views[0] != 1.0:
            # The novelty check reads the members' features of the first view: it must be the image as given.
            raise ValueError(f"An ensemble's first view must be the image as given, 1.0. Got {tuple(views)} instead.")
        self.views = [float(v) for v in views]
        for index, scale in enumerate(self.views):
            if scale != 1.0:
                self.register_buffer(f"view_{index}", torch.from_numpy(zoom_matrix(self.size, scale)), persistent=False)

    def member_input(self, images: torch.Tensor, index: int) -> torch.Tensor:
        """``images`` (B, 1, S, S) as member ``index`` takes them: (B, 1, s, s)."""
        if self.sizes[index] == self.size:
            return images
        matrix = getattr(self, f"resize_{index}")  # (s, S)
        return matrix @ images @ matrix.T

    def member_probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """(members, B, classes) temperature-scaled probabilities."""
        return torch.stack([
            torch.softmax(member(self.member_input(images, index)).float() / self.temperatures[index], dim=1)
            for index, member in enumerate(self.members)
        ])

    def view(self, images: torch.Tensor, index: int) -> torch.Tensor:
        """Test-time view ``index`` of (B, 1, S, S) images."""
        if self.views[index] == 1.0:
            return images
        matrix = getattr(self, f"view_{index}")  # (S, S)
        return matrix @ images @ matrix.T

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # (B, 1, S, S) -> (B, classes)
        probabilities = torch.cat([self.member_probabilities(self.view(images, index))
                                   for index in range(len(self.views))]).mean(0)
        # The floor keeps log finite when every member is certain; it is far below any reported probability.
        return torch.log(probabilities.clamp_min(1e-12))


def member_description(metadata: dict, file_sha256: str) -> dict:
    """What an ensemble records of one member bundle: enough to rebuild it and to say where it came from."""
    training = metadata.get("training", {})
    return {
        "id": str(metadata.get("id") or metadata["model_name"]), "model_name": metadata["model_name"],
        "size": int(metadata["preprocessing"]["size"]), "temperature": float(metadata.get("temperature", 1.0)),
        "weights_sha256": metadata.get("weights_sha256", ""), "bundle_sha256": file_sha256,
        "run": training.get("run", ""), "val_acc": training.get("val_acc"), "val_loss": training.get("val_loss"),
        "split": training.get("split", ""), "seed": flat_config(training.get("config", {})).get("seed"),
    }


def build_ensemble(metadata: dict) -> Ensemble:
    """An ensemble with untrained members, shaped by a bundle's ``ensemble`` metadata, ready for its weights."""
    members = metadata["ensemble"]["members"]
    networks = [create_model(m["model_name"], num_classes=len(metadata["classes"])) for m in members]
    return Ensemble(networks, names=[m["model_name"] for m in members], sizes=[m["size"] for m in members],
                    temperatures=[m["temperature"] for m in members],
                    views=tuple(metadata["ensemble"].get("views", (1.0,))))


def split_identity(metadata: dict) -> dict:
    """What says which split a model was trained on: the options that made it (method or file, seed,
    fractions) and, where the bundle records it, the hash of its roles."""
    training = metadata.get("training", {})
    config = flat_config(training.get("config", {}))
    identity = {"split": training.get("split"), "split_file": Path(config.get("split_file") or "").name,
                **{key: config.get(key) for key in ("split_seed", "val_fraction", "holdout")}}
    if training.get("split_sha256"):
        identity["split_sha256"] = training["split_sha256"]
    return identity


def same_split(a: dict, b: dict) -> bool:
    """Two split identities agree: by their roles' hash when both have one, else by the options."""
    if "split_sha256" in a and "split_sha256" in b:
        return a["split_sha256"] == b["split_sha256"]
    return {k: v for k, v in a.items() if k != "split_sha256"} == {k: v for k, v in b.items() if k != "split_sha256"}


def check_members(bundles: list) -> None:
    """Refuse bundles that cannot form an ensemble.

    Raises:
        ModelFileError: fewer than two members, members with other classes, an ensemble among them, or
            members trained on different splits (the ensemble's validation images would then be training
            images of some).
    """
    from pneumo.errors import ModelFileError

    if len(bundles) < 2:
        raise ModelFileError(f"an ensemble needs at least two member models; got {len(bundles)}")
    first = bundles[0]
    for bundle in bundles[1:]:
        if bundle.classes != first.classes:
            raise ModelFileError(f"{bundle.path}: classes {bundle.classes} differ from {first.path}'s {first.classes}")
        if bundle.metadata.get("model_name") == ENSEMBLE_NAME or first.metadata.get("model_name") == ENSEMBLE_NAME:
            raise ModelFileError(f"{bundle.path}: an ensemble cannot be a member; pass its members instead")
        split, first_split = split_identity(bundle.metadata), split_identity(first.metadata)
        if not same_split(split, first_split):
            raise ModelFileError(f"{bundle.path} was trained on split {split} and {first.path} on {first_split}: "
                                 "members must share their training split, or validation would see training images")


def ensemble_from_bundles(bundles: list, *, views: tuple[float, ...] = (1.0,)) -> tuple[Ensemble, dict]:
    """An ensemble of loaded bundles (their trained networks, not copies) and the metadata that describes it.

    Raises:
        ModelFileError: bundles that cannot form an ensemble (``check_members``).
    """
    check_members(bundles)
    first = bundles[0]
    members = [member_description(b.metadata, b.file_sha256) for b in bundles]
    ensemble = Ensemble([b.model for b in bundles], names=[m["model_name"] for m in members],
                        sizes=[m["size"] for m in members], temperatures=[m["temperature"] for m in members],
                        views=views)
    training = first.metadata.get("training", {})
    shared = {key: training[key] for key in ("split", "train_images", "val_images", "train_class_counts",
                                             "patient_overlap") if key in training}
    shared["config"] = {"split_file": flat_config(training.get("config", {})).get("split_file")}
    described = {"members": members, "combination": COMBINATION, "views": list(ensemble.views)}
    return ensemble, {"ensemble": described, "training": shared}
