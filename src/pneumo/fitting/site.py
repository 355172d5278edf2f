"""Site calibration: set a model's decision on labelled images of one site, with a stated guarantee.

``calibrate_site`` refits, on a few hundred labelled images of the site, what turns the network's
outputs into a decision (temperature, the operating point with a finite-sample guarantee, conformal
class sets) and, with ``method="bn"``, first re-estimates the BatchNorm statistics on the site's
images (AdaBN). The network's weights are otherwise untouched. The result is a new model folder whose
metadata says where its cut-off came from: the site, the image count, the guarantee, the date.

What it cannot fix: another population, another view, labels that mean something else. The
guarantee holds for new images exchangeable with the labelled ones: the same site, scanner and
population, labelled the same way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import beta

from pneumo.data.archive import read_label_rows
from pneumo.errors import PneumoError
from pneumo.fitting.calibrate import DEFAULT_TARGET, conformal_record
from pneumo.fitting.guarantee import GUARANTEES, guaranteed_threshold
from pneumo.fitting.refit import KEEP, refit_bundle
from pneumo.inference import predict_logits, softmax
from pneumo.inference.adaptation import BATCH_SIZE, adapt_batchnorm, file_list_sha256
from pneumo.inference.calibration import fit_temperature
from pneumo.inference.decision import decide
from pneumo.labels import CLASSES, NORMAL, class_index
from pneumo.models.bundle import Bundle
from pneumo.predict import load_images

__all__ = ["METHODS", "MIN_LABELLED", "SiteLabels", "adapt_bundle", "calibrate_site", "read_site_labels"]

METHODS = ("none", "bn")
# Fewer labelled images than this cannot place a temperature usefully, whatever the guarantee asks.
MIN_LABELLED = 20


@dataclass(frozen=True)
class SiteLabels:
    """Labelled site images: file paths, class indices and, when the CSV gives them, patient ids."""

    files: list[str]
    labels: np.ndarray  # (N,) class indices
    patients: np.ndarray | None  # (N,) patient ids, or None when the CSV has no patient column


def read_site_labels(path: Path) -> SiteLabels:
    """A labels CSV (``path``, ``class``, optionally ``patient``; read as everywhere else,
    ``archive.read_label_rows``); relative paths are taken from the CSV's folder.

    Raises:
        PneumoError: a missing file or column, a row without a path, or an unknown class, naming the line.
    """
    path = Path(path)
    files, labels, patients = [], [], []
    for line, row in read_label_rows(path):
        try:
            if not row["path"]:
                raise ValueError("no path in this row")
            labels.append(class_index(row["class"]))
        except ValueError as error:
            raise PneumoError(f"{path}, line {line}: {error}") from None
        file = Path(row["path"])
        files.append(str(file if file.is_absolute() else path.parent / file))
        patients.append(row.get("patient", ""))
    given = any(patients)
    if given and not all(patients):
        raise PneumoError(f"{path}: {patients.count('')} rows have no patient; give every row one, or none")
    return SiteLabels(files, np.asarray(labels, np.int64), np.asarray(patients) if given else None)


def _rates(labels: np.ndarray, predicted: np.ndarray) -> dict:
    """Pneumonia sensitivity and specificity with exact (Clopper-Pearson) 95% intervals."""
    def rate(hits: int, total: int) -> dict:
        low = float(beta.ppf(0.025, hits, total - hits + 1)) if hits else 0.0
        high = float(beta.ppf(0.975, hits + 1, total - hits)) if hits < total else 1.0
        return {"value": hits / total if total else float("nan"), "ci95": [round(low, 4), round(high, 4)],
                "count": f"{hits}/{total}"}

    sick, called = labels != NORMAL, predicted != NORMAL
    return {"sensitivity": rate(int((sick & called).sum()), int(sick.sum())),
            "specificity": rate(int((~sick & ~called).sum()), int((~sick).sum()))}


def adapt_bundle(bundle: Bundle, images: np.ndarray, files: list[str], out: Path, *, name: str | None = None) -> Bundle:
    """Adapt a bundle's BatchNorm statistics to unlabeled ``images`` (AdaBN) and write a new model folder ``out``.

    The new bundle keeps the source's metadata (classes, preprocessing, calibration, training) and records the
    adaptation: method, image count, a hash of the file list, date, batch size, and the source model.
    """
    adapted = adapt_batchnorm(bundle.model, images)
    return refit_bundle(bundle, out=out, model=adapted, novelty=None, id=name or f"{bundle.model_id}-adapted",
                        adaptation=_adaptation_record(bundle, images, files))


def _adaptation_record(bundle: Bundle, images: np.ndarray, files: list[str]) -> dict:
    return {
        "method": "AdaBN: BatchNorm statistics re-estimated on unlabeled site images (Li et al. 2016)",
        "images": int(len(images)), "file_list_sha256": file_list_sha256(files), "batch_size": BATCH_SIZE,
        "date": time.strftime("%Y-%m-%d"),
        "source": {"id": bundle.model_id, "bundle_sha256": bundle.file_sha256,
                   "weights_sha256": bundle.metadata.get("weights_sha256")},
        "calibration": "temperature and operating point of the source model (fitted on its validation images)",
        "novelty": "not carried: the source model's novelty check was fitted on features that the new BatchNorm "
                   "statistics change, and the training images a new one needs are not at hand here",
    }


def calibrate_site(bundle: Bundle, site: SiteLabels, out: Path, *, site_name: str, method: str = "none",
                   bn_images: tuple[np.ndarray, list[str]] | None = None, target: float | None = None,
                   guarantee: str = "conformal", confidence: float = 0.95, keep_operating_point: bool = False,
                   name: str | None = None) -> tuple[Bundle, dict]:
    """Refit ``bundle``'s decision on the site's labelled images and write the result into the new folder ``out``.

    Args:
        bundle: the source model.
        site: its labelled images (``read_site_labels``).
        out: a new folder for model.pt, model.onnx and MODEL_CARD.md.
        site_name: the site's name, recorded with the cut-off.
        method: "none" (temperature, operating point and conformal scores only) or "bn" (AdaBN first).
        bn_images: for "bn", unlabeled site images (N, S, S) and their files; None: the labelled images.
        target: pneumonia sensitivity to keep; None: the source model's target (0.97 when it has none).
        guarantee: "conformal" (expected sensitivity >= target) or "pac" (>= target with ``confidence``).
        keep_operating_point: keep the source model's cut-off (refit only temperature and conformal scores).
        name: the new model's id (default ``<source id>-<site>``).

    Returns:
        The written bundle, and a summary (what was fitted, on how many images, the site's own rates).

    Raises:
        ValueError: an unknown method or guarantee.
        PneumoError: unreadable labelled images, too few of them, or too few pneumonia cases for the guarantee
            (with the number needed).
    """
    if method not in METHODS:
        raise ValueError(f"The site calibration 'method' must be one of {METHODS}. Got {method!r} instead.")
    if guarantee not in GUARANTEES:
        raise ValueError(f"The 'guarantee' must be one of {GUARANTEES}. Got {guarantee!r} instead.")
    loaded, problems = load_images(site.files, bundle.size)
    if problems:
        source, reason = problems[0]
        raise PneumoError(f"{len(problems)} labelled site images could not be read, e.g. {source}: {reason}; fix or "
                          "remove their rows")
    labels = site.labels
    if len(labels) < MIN_LABELLED or len(set((labels != NORMAL).tolist())) < 2:
        raise PneumoError(f"site calibration needs at least {MIN_LABELLED} labelled images with both normal and "
                          f"pneumonia cases; got {len(labels)} ({int((labels == NORMAL).sum())} normal)")
    images = np.stack([image for _, image, _ in loaded])
    model, changes, novelty = bundle.model, {}, KEEP
    summary: dict = {"method": method, "labelled_images": int(len(labels))}
    if method == "bn":
        bn_stack, bn_files = bn_images if bn_images is not None else (images, site.files)
        model, novelty = adapt_batchnorm(bundle.model, bn_stack), None
        changes["adaptation"] = _adaptation_record(bundle, bn_stack, bn_files)
        shared = len({Path(f).resolve() for f in bn_files} & {Path(f).resolve() for f in site.files})
        summary.update(bn_images=int(len(bn_stack)), bn_images_also_labelled=shared)
        changes["adaptation"]["also_labelled"] = shared
    logits = predict_logits(model, images)
    temperature = fit_temperature(logits, labels)
    probs = softmax(logits, temperature)
    source_point = bundle.metadata.get("operating_point") or {}
    target = target or source_point.get("target_sensitivity") or DEFAULT_TARGET
    record = {"name": site_name, "images": int(len(labels)), "date": time.strftime("%Y-%m-%d"),
              "patients": None if site.patients is None else int(len(set(site.patients))),
              "class_counts": np.bincount(labels, minlength=len(CLASSES)).tolist(),
              "file_list_sha256": file_list_sha256(site.files), "method": method,
              "source": {"id": bundle.model_id, "bundle_sha256": bundle.file_sha256}}
    if keep_operating_point:
        if not source_point:
            raise PneumoError(f"{bundle.model_id} has no operating point to keep; drop --keep-operating-point")
        point = dict(source_point)  # with its own validation figures: the site's are in site_calibration
        threshold = float(point["pneumonia_threshold"])
    else:
        chosen = guaranteed_threshold(labels, probs, target=target, kind=guarantee, confidence=confidence,
                                      patients=site.patients)
        threshold = chosen.threshold
        record["guarantee"] = chosen.to_dict()
        # What else was fitted on the same labelled images, which the guarantee's exchangeability argument leaves out.
        record["also_fitted_on_them"] = ["temperature"] + (["batchnorm"] if summary.get("bn_images_also_labelled") else [])
        point = {"pneumonia_threshold": threshold, "target_sensitivity": target, "fitted_on": "site"}  # how: below
    rates = _rates(labels, decide(probs, threshold))
    record["rates_on_labelled_images"] = rates
    if not keep_operating_point:
        point.update(val_sensitivity=rates["sensitivity"]["value"], val_specificity=rates["specificity"]["value"])
    changes.update(
        id=name or f"{bundle.model_id}-{site_name}", temperature=temperature, operating_point=point,
        conformal=conformal_record(labels, probs, f"{len(labels)} labelled images of site {site_name}"),
        site_calibration=record,
        source_model={"id": bundle.model_id, "bundle_sha256": bundle.file_sha256,
                      "operating_point": source_point, "temperature": bundle.temperature,
                      "evaluation": bundle.metadata.get("evaluation")},
    )
    written = refit_bundle(bundle, out=out, model=model if method == "bn" else None, novelty=novelty,
                           drop=("evaluation", "recalibration"), **changes)
    summary.update(temperature=temperature, threshold=threshold, guarantee=record.get("guarantee"), rates=rates,
                   kept_operating_point=keep_operating_point)
    return written, summary
