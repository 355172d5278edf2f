"""A check that an image resembles the training X-rays, from the model's own features.

The plain input checks (``checks``) read what a file says of itself; they cannot tell a grey
photograph, a chart or noise from a radiograph. This check looks at what the network makes of
the image: the features that enter its classification head (the registry's ``classifier``:
pooled convolutional features; each member's, for an ensemble; for test-time views, those of
the image as given). Fitted on the training images, it keeps their mean and the principal
directions of their spread (scikit-learn's PCA, whitened); an image's **novelty** is its
squared Mahalanobis distance in that subspace, per dimension (about 1 for a training image),
averaged over an ensemble's members. The threshold is the novelty that all but
``false_alarm`` of the validation images stay under, so that on images like the training
set's it warns at that stated rate.

A flagged image is unlike the training X-rays: not a chest radiograph, or one degraded
(strong noise or blur), framed or exposed differently. An unflagged image is not proven to be
a pediatric frontal chest X-ray.

The check is an ``nn.Module`` so that an ONNX export computes it in the same graph
(``ScoredModel``); its tensors travel in the bundle beside the weights.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from pneumo.inference.logits import FeatureTap, logits_and_features
from pneumo.models.info import NoveltyInfo

__all__ = ["DEFAULT_COMPONENTS", "DEFAULT_FALSE_ALARM", "Novelty", "ScoredModel", "feature_layers", "fit_novelty",
           "logits_and_novelty", "novelty_warning"]

DEFAULT_COMPONENTS = 256  # principal directions kept per feature layer (MobileNetV2's head takes 1280 features)
DEFAULT_FALSE_ALARM = 0.01  # share of validation X-rays flagged
MIN_RELATIVE_VARIANCE = 1e-6  # a principal direction with less variance than this share of the largest's is left out


def feature_layers(model_name: str, model: nn.Module) -> list[str]:
    """The paths of the modules whose inputs are the features: the classification head of a registered model
    (``ModelSpec.classifier``), or of each member of an ensemble."""
    from pneumo.models import get_spec
    from pneumo.models.ensemble import ENSEMBLE_NAME

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


def fit_novelty(model: nn.Module, model_name: str, train_images: np.ndarray, val_images: np.ndarray, *,
                false_alarm: float = DEFAULT_FALSE_ALARM, components: int = DEFAULT_COMPONENTS,
                source: str = "") -> Novelty:
    """Fit the novelty check of ``model`` on its training images and set its threshold on validation images.

    Args:
        model: a trained model (or ensemble).
        model_name: its registry name (or ``ensemble``), which says where its classification head is.
        train_images: uint8 (N, S, S) training images, as the model takes them (not augmented).
        val_images: uint8 (M, S, S) validation images: the threshold is their (1 - false_alarm) quantile.
        false_alarm: the share of validation images the threshold flags.
        components: principal directions kept per feature layer (fewer where there are fewer images or features).
        source: where the images came from, for the record.

    Raises:
        ValueError: ``false_alarm`` outside (0, 0.5), or fewer than 3 training images.
    """
    from sklearn.decomposition import PCA

    from pneumo.models.bundle import weights_sha256  # bundle imports this module

    if not 0 < false_alarm < 0.5:
        raise ValueError(f"The 'false_alarm' rate must be in (0, 0.5). Got {false_alarm} instead.")
    if len(train_images) < 3 or len(val_images) < 1:
        raise ValueError(f"Fitting the novelty check needs at least 3 training and 1 validation image. "
                         f"Got {len(train_images)} and {len(val_images)} instead.")
    layers = feature_layers(model_name, model)
    _, train_features = logits_and_features(model, train_images, layers)
    means, projections = [], []
    for features in train_features:
        kept = min(components, len(features) - 1, features.shape[1])
        pca = PCA(kept, whiten=True, random_state=0).fit(features.astype(np.float64))
        # Directions without spread (features a ReLU keeps at zero for every training image) cannot be whitened.
        spread = pca.explained_variance_ > pca.explained_variance_[0] * MIN_RELATIVE_VARIANCE
        means.append(torch.from_numpy(pca.mean_.astype(np.float32)))
        projections.append(torch.from_numpy(
            (pca.components_[spread].T / np.sqrt(pca.explained_variance_[spread])).astype(np.float32)))
    novelty = Novelty(layers, means, projections, threshold=0.0)
    _, val_scores = logits_and_novelty(model, novelty, val_images)
    # The "higher" quantile: at most false_alarm of the validation images lie above it.
    novelty.threshold = float(np.quantile(val_scores, 1 - false_alarm, method="higher"))
    novelty.description = {
        "weights_sha256": weights_sha256(model.state_dict()),  # the weights whose features it describes
        "score": "squared Mahalanobis distance per dimension in the training features' whitened principal "
                 "subspace (PCA), averaged over feature layers; about 1 for a training image",
        "features": "inputs of the classification head" + (" of each member" if len(layers) > 1 else ""),
        "components": [int(p.shape[1]) for p in projections], "false_alarm_rate": false_alarm,
        "fitted_on_images": int(len(train_images)), "threshold_set_on_images": int(len(val_images)),
        "val_flagged": float(np.mean(val_scores > novelty.threshold)), "source": source,
    }
    return novelty


def logits_and_novelty(model: nn.Module, novelty: Novelty | None, images: np.ndarray, *, batch_size: int = 128
                       ) -> tuple[np.ndarray, np.ndarray | None]:
    """(N, K) logits and (N,) novelty of uint8 images (N, S, S) in one pass; the novelty is None without a check."""
    if novelty is None:
        return logits_and_features(model, images, batch_size=batch_size)[0], None
    logits, features = logits_and_features(model, images, novelty.layer_paths, batch_size=batch_size)
    return logits, novelty.score(features)


def novelty_warning(score: float, check: NoveltyInfo) -> str | None:
    """The warning for an image whose novelty is above the model's threshold (``ModelInfo.novelty``); None below it."""
    if not check.flagged(score):
        return None
    kept = 100 * (1 - check.false_alarm_rate)
    return (f"unlike the training X-rays (novelty {score:.2f}, above the {check.threshold:.2f} that {kept:g}% of "
            "validation X-rays stay under): it may not be a chest X-ray at all, or not a child's frontal one, or "
            "it is degraded or framed differently; do not rely on the answer")
