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

The check is an ``nn.Module`` (``pneumo.models.novelty``) so that an ONNX export computes it in the
same graph (``ScoredModel``); its tensors travel in the bundle beside the weights.
"""

from __future__ import annotations


import numpy as np
import torch
from torch import nn

from pneumo.inference.logits import logits_and_features
from pneumo.models.bundle import weights_sha256
from pneumo.models.info import NoveltyInfo
from pneumo.models.novelty import Novelty, feature_layers

__all__ = ["DEFAULT_COMPONENTS", "DEFAULT_FALSE_ALARM", "fit_novelty", "logits_and_novelty", "novelty_warning"]

DEFAULT_COMPONENTS = 256  # principal directions kept per feature layer (MobileNetV2's head takes 1280 features)
DEFAULT_FALSE_ALARM = 0.01  # share of validation X-rays flagged
MIN_RELATIVE_VARIANCE = 1e-6  # a principal direction with less variance than this share of the largest's is left out


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
    return (f"less typical of the training X-rays than {kept:g}% of validation X-rays (novelty {score:.2f}, above "
            f"{check.threshold:.2f}): it may be degraded, framed differently or from another kind of patient; "
            "check the answer with care")
