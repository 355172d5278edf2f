"""Adapting a model to one site's images without labels: BatchNorm statistics (AdaBN).

A network's BatchNorm layers normalize each feature with the mean and variance it had on the
training images. Images from another scanner or export shift those statistics, and every
later layer sees features it was not trained on. AdaBN re-estimates them on unlabeled images
of the new site and changes nothing else (Li et al. 2016, "Revisiting Batch Normalization
for Practical Domain Adaptation"; Schneider et al. 2020, "Improving robustness against
common corruptions by covariate shift adaptation").

What it needs: a batch of images from one site, at least ``MIN_IMAGES``, with a class mix
not far from the one the model will meet there (the statistics absorb the class mix too).
What it does not fix: a change of what the images show (another population, another view),
labels that mean something else, or a site whose images differ from each other as much as
from the training images.

Prior re-estimation (``--adapt-priors``, EM) can follow it; it should not come first, since EM
follows the model's own beliefs, which the acquisition shift has moved.
"""

from __future__ import annotations

import copy
import hashlib
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pneumo.errors import PneumoError

__all__ = ["MIN_IMAGES", "ADAPT_MODES", "adapt_batchnorm", "adapt_bundle", "batchnorm_layers", "file_list_sha256",
           "read_labels", "recalibrate"]

# Fewer labelled images than this cannot place an operating point or a temperature usefully.
MIN_LABELLED = 20
DEFAULT_TARGET_SENSITIVITY = 0.97
# Below this many images, the per-channel variances of the deeper layers (7x7 maps at 224 px)
# rest on too few values to replace the training statistics.
MIN_IMAGES = 16
BATCH_SIZE = 64
SHUFFLE_SEED = 0
ADAPT_MODES = ("none", "priors", "bn", "bn+priors")


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [module for module in model.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def adapt_batchnorm(model: nn.Module, images: np.ndarray, *, batch_size: int = BATCH_SIZE) -> nn.Module:
    """A copy of ``model`` whose BatchNorm statistics are re-estimated on ``images``.

    Every image counts the same (a cumulative average over batches of ``batch_size``); the
    images are shuffled with a fixed seed first, so that batches mix whatever order the files
    came in. Everything but the statistics stays as it was; the copy is in eval mode.

    Args:
        model: a model built by ``create_model``.
        images: (N, S, S) uint8 images of one site, N >= MIN_IMAGES.

    Raises:
        PneumoError: too few images, or a model without BatchNorm layers.
    """
    if len(images) < MIN_IMAGES:
        raise PneumoError(f"BatchNorm adaptation needs at least {MIN_IMAGES} images of the site; got {len(images)}. "
                          "Give more images (a few hundred re-estimate the statistics well).")
    if not batchnorm_layers(model):
        raise PneumoError(f"this model ({type(model).__name__}) has no BatchNorm layers, so there are no statistics "
                          "to adapt; use --adapt priors, or a model with BatchNorm (mobilenet_v2, efficientnet_lite0, cnn)")
    adapted = copy.deepcopy(model).eval()
    for layer in batchnorm_layers(adapted):
        layer.reset_running_stats()
        layer.momentum = None  # a cumulative average instead of an exponential one
        layer.train()
    device = next(adapted.parameters()).device
    order = np.random.default_rng(SHUFFLE_SEED).permutation(len(images))
    # The cumulative average weighs every batch the same: batches of (nearly) equal size, all images used.
    for indices in np.array_split(order, -(-len(images) // batch_size)):
        batch = torch.from_numpy(np.ascontiguousarray(images[np.sort(indices)])).to(device)
        adapted(batch.float().div_(255.0)[:, None].contiguous(memory_format=torch.channels_last))
    for layer, original in zip(batchnorm_layers(adapted), batchnorm_layers(model)):
        layer.momentum = original.momentum
    return adapted.eval()


def file_list_sha256(files: list[str]) -> str:
    """A hash of the sorted file names an adaptation used: says which images, without storing their paths."""
    return hashlib.sha256("\n".join(sorted(Path(f).name for f in files)).encode()).hexdigest()


def adapt_bundle(bundle, images: np.ndarray, files: list[str], out: Path, *, name: str | None = None) -> Path:
    """Adapt a bundle's BatchNorm statistics to ``images`` and write the result as a new bundle in ``out``.

    The new bundle keeps the source's metadata (classes, preprocessing, calibration, training)
    and records the adaptation: method, image count, a hash of the file list, date, batch
    size, and the source model's id and sha256.

    Returns:
        The path of the written ``model.pt``.
    """
    from pneumo.models.bundle import BUNDLE_NAME, carried_metadata, save_bundle

    adapted = adapt_batchnorm(bundle.model, images)
    metadata = carried_metadata(bundle.metadata)
    metadata["id"] = name or f"{bundle.model_id}-adapted"
    metadata["adaptation"] = {
        "method": "AdaBN: BatchNorm statistics re-estimated on unlabeled site images (Li et al. 2016)",
        "images": int(len(images)), "file_list_sha256": file_list_sha256(files), "batch_size": BATCH_SIZE,
        "date": time.strftime("%Y-%m-%d"),
        "source": {"id": bundle.model_id, "bundle_sha256": bundle.file_sha256,
                   "weights_sha256": bundle.metadata.get("weights_sha256")},
        "calibration": "temperature and operating point of the source model (fitted on its validation images)",
        "novelty": "not carried: the source model's novelty check was fitted on features that the new BatchNorm "
                   "statistics change, and the training images a new one needs are not at hand here",
    }
    path = Path(out) / BUNDLE_NAME
    save_bundle(path, adapted, model_name=bundle.metadata["model_name"], size=bundle.size, **metadata)
    return path


def read_labels(path: Path) -> tuple[list[str], np.ndarray]:
    """A labels CSV (``path``, ``class``; read as everywhere else, ``archive.read_label_rows``) as file
    paths, relative ones taken from the CSV's folder, and class indices.

    Raises:
        PneumoError: a missing file or column, a row without a path, or an unknown class, naming the line.
    """
    from pneumo.data.archive import read_label_rows
    from pneumo.labels import class_index

    path = Path(path)
    files, labels = [], []
    for line, row in read_label_rows(path):
        try:
            if not row["path"]:
                raise ValueError("no path in this row")
            labels.append(class_index(row["class"]))
        except ValueError as error:
            raise PneumoError(f"{path}, line {line}: {error}") from None
        file = Path(row["path"])
        files.append(str(file if file.is_absolute() else path.parent / file))
    return files, np.asarray(labels, np.int64)


def recalibrate(bundle_path: Path, labels_path: Path) -> None:
    """Refit a bundle's temperature and operating point on labelled images of its site, in place.

    The operating point keeps the source model's target sensitivity (0.97 when it had none).

    Raises:
        PneumoError: fewer than MIN_LABELLED readable images, or no normal or no pneumonia image among them.
    """
    from pneumo.inference.calibration import fit_temperature, operating_point
    from pneumo.evaluation.metrics import summarize
    from pneumo.inference import predict_logits, softmax
    from pneumo.models.bundle import carried_metadata, load_bundle, save_bundle
    from pneumo.predict import load_images

    bundle = load_bundle(bundle_path)
    files, labels = read_labels(labels_path)
    loaded, problems = load_images(files, bundle.size)
    if problems:
        source, reason = problems[0]
        raise PneumoError(f"{labels_path}: {len(problems)} labelled images could not be read, e.g. {source}: {reason}")
    if len(loaded) < MIN_LABELLED or len(set((labels != 0).tolist())) < 2:
        raise PneumoError(f"{labels_path}: recalibration needs at least {MIN_LABELLED} labelled images with both normal and "
                          f"pneumonia cases; got {len(loaded)} ({int((labels == 0).sum())} normal)")
    logits = predict_logits(bundle.model, np.stack([image for _, image, _ in loaded]))
    temperature = fit_temperature(logits, labels)
    probs = softmax(logits, temperature)
    target = (bundle.metadata.get("operating_point") or {}).get("target_sensitivity", DEFAULT_TARGET_SENSITIVITY)
    threshold = operating_point(labels, probs, target)
    scores = summarize(labels, probs, threshold)
    metadata = carried_metadata(bundle.metadata)
    metadata.update(
        temperature=temperature,
        operating_point={"pneumonia_threshold": threshold, "target_sensitivity": target,
                         "val_sensitivity": scores["pneumonia_sensitivity"],
                         "val_specificity": scores["pneumonia_specificity"], "fitted_on": "the site's labelled images"},
        recalibration={"images": int(len(labels)), "file_list_sha256": file_list_sha256(files),
                       "pneumonia_threshold": threshold, "temperature": temperature,
                       "class_counts": np.bincount(labels, minlength=3).tolist()},
    )
    save_bundle(bundle.path, bundle.model, model_name=bundle.metadata["model_name"], size=bundle.size,
                novelty=bundle.novelty, **metadata)
