"""``evaluate``: a model bundle on a set of prepared images -> metrics, intervals, figures."""

from __future__ import annotations

import csv
import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pneumo import DISCLAIMER
from pneumo.data.cache import PreparedData, prepare_folder
from pneumo.data.splits import load_split, split_roles
from pneumo.errors import DataLayoutError
from pneumo.evaluation import plots
from pneumo.inference.calibration import PriorAdaptation
from pneumo.evaluation.metrics import bootstrap, set_metrics, summarize
from pneumo.inference import predict_logits, softmax
from pneumo.inference.checks import ABSTAIN_NOVELTY_FACTOR
from pneumo.inference.conformal import class_thresholds
from pneumo.inference.novelty import logits_and_novelty
from pneumo.labels import CLASSES, SHORT_NAMES
from pneumo.models.bundle import Bundle

ROLES = ("test", "val", "train")


@dataclass(frozen=True)
class Predictions:
    """Per-image outputs of one model on one image set, in the same order as the data."""

    paths: np.ndarray
    patients: np.ndarray
    labels: np.ndarray
    probs: np.ndarray  # (N, K), after temperature (and prior adaptation when asked)

    def write_csv(self, path: Path) -> None:
        with Path(path).open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "patient", "label", *[f"p_{name}" for name in SHORT_NAMES]])
            for row in zip(self.paths, self.patients, self.labels, self.probs):
                writer.writerow([row[0], row[1], CLASSES[row[2]], *[f"{p:.6f}" for p in row[3]]])


def select_images(data_dir: Path, *, size: int, cache_dir: Path, role: str, split_file: Path | None) -> tuple[PreparedData, str]:
    """The prepared images of one role, and a sentence saying where the roles came from.

    Roles come from ``split_file`` when given (e.g. a run's split.csv or the shipped internal
    test split), else from the archive's own folders (``test/`` is the archive's test split).
    """
    if role not in ROLES:
        raise ValueError(f"The 'split' must be one of {ROLES}. Got {role!r} instead.")
    data = prepare_folder(data_dir, size=size, cache_dir=cache_dir).data
    if split_file:
        roles = load_split(split_file, data).roles
        source = f"role '{role}' of {split_file}"
    elif Path(data_dir).suffix.lower() == ".csv":
        roles = data.splits
        source = f"the 'split' column of {data_dir}"
    else:
        roles = data.splits
        source = f"the {role}/ folder of {data_dir}"
    chosen = np.flatnonzero(roles == role)
    if len(chosen) == 0:
        hint = ("pass --split-file (a run's split.csv, or splits/internal.csv for the shipped models' split)"
                if not split_file else "check that the split file belongs to this data")
        found = ", ".join(f"{count} {name or 'without one'}" for name, count in zip(*np.unique(roles, return_counts=True)))
        raise DataLayoutError(f"no '{role}' images in {source} (its images: {found or 'none'}); {hint}")
    return data.subset(chosen), source


def run_split_file(models: list[str | Path]) -> Path | None:
    """The ``split.csv`` of the first run folder among ``models`` (its roles say which images are test), or None."""
    return next((Path(m) / "split.csv" for m in models if (Path(m) / "split.csv").is_file()), None)


def recorded_split(bundle) -> Path | None:
    """The split file a bundle's training recorded, when it is here (shipped models name splits/internal.csv)."""
    recorded = bundle.info.training_config.get("split_file")
    return Path(recorded) if recorded and Path(recorded).is_file() else None


def evaluate_model(model: str | Path, data_dir: Path, *, role: str = "test", split_file: Path | None = None,
                   cache_dir: Path, **options) -> tuple[dict, Predictions]:
    """Load ``model`` and evaluate it (``evaluate``, with ``options``) on one role of the data in ``data_dir``.

    The roles come from ``split_file``, else from the run folder's own ``split.csv`` when ``model``
    is a run, else from the archive's folders (see ``select_images``).
    """
    from pneumo.models.bundle import load_bundle

    bundle = load_bundle(model)
    split_file = split_file or run_split_file([model])
    images, source = select_images(Path(data_dir), size=bundle.size, cache_dir=Path(cache_dir), role=role,
                                   split_file=split_file)
    metrics, predictions = evaluate(bundle, images, source=source, **options)
    seen = seen_in_training(bundle, model, images)
    if seen is not None:
        metrics["seen_in_training"] = seen
    return metrics, predictions


def seen_in_training(bundle: Bundle, model: str | Path, images: PreparedData) -> dict | None:
    """How many of ``images`` the model was trained on or had its epoch and calibration chosen on, matched by
    content against the split its run recorded; None when that split is not at hand."""
    split = run_split_file([model]) or recorded_split(bundle)
    if split is None:
        return None
    roles = split_roles(split)
    found = [roles.get(sha) for sha in images.sha256]
    return {"split_file": str(split), "train": found.count("train"), "val": found.count("val")}


@functools.lru_cache(maxsize=4)
def _onnx_predictor(onnx_path: str, bundle_sha256: str):
    """The ONNX export beside a bundle, loaded (and checked against it) once for the many sets of a stress run."""
    from pneumo.predict import Predictor

    return Predictor(onnx_path, backend="onnx")


def model_outputs(bundle: Bundle, images: np.ndarray, backend: str = "torch") -> tuple[np.ndarray, np.ndarray | None]:
    """(N, K) logits and (N,) novelty (None without a novelty check) of uint8 images (N, S, S), on one backend:
    the bundle's PyTorch model, or the ONNX export beside it (several times faster on a CPU).

    Raises:
        ModelFileError: for ``onnx``, no model.onnx beside the bundle, or one exported from other weights.
    """
    if resolved_backend(bundle, backend) == "onnx":
        return _onnx_predictor(str(Path(bundle.path).parent / "model.onnx"), bundle.file_sha256).outputs(images)
    return logits_and_novelty(bundle.model, bundle.novelty, images)


def resolved_backend(bundle: Bundle, backend: str) -> str:
    """``backend``, with "auto" made "onnx" where the bundle has an export beside it and "torch" elsewhere, as
    ``pneumo.predict.Predictor`` does."""
    from pneumo.predict import BACKENDS

    if backend not in BACKENDS:
        raise ValueError(f"The 'backend' must be one of {BACKENDS}. Got {backend!r} instead.")
    if backend == "auto":
        return "onnx" if (Path(bundle.path).parent / "model.onnx").is_file() else "torch"
    return backend


def adapted_probabilities(bundle: Bundle, images: np.ndarray, *, adapt: str = "none",
                          backend: str = "torch") -> tuple[np.ndarray, dict]:
    """Calibrated probabilities for uint8 images (N, S, S), adapted to them as ``adapt`` says.

    ``adapt``: "none"; "priors" (EM re-estimates the class mix of these images); "bn" (AdaBN:
    BatchNorm statistics re-estimated on these images, always with the PyTorch model); or
    "bn+priors" (both, in that order). Returns the probabilities and what was done.
    """
    from pneumo.inference.adaptation import ADAPT_MODES, adapt_batchnorm

    if adapt not in ADAPT_MODES:
        raise ValueError(f"The 'adapt' option must be one of {ADAPT_MODES}. Got {adapt!r} instead.")
    backend = resolved_backend(bundle, backend)
    info: dict = {"temperature": bundle.temperature, "adapt": adapt, "adapt_priors": adapt.endswith("priors"),
                  "backend": backend}
    if adapt.startswith("bn"):
        logits = predict_logits(adapt_batchnorm(bundle.model, images), images)
        info["backend"] = "torch"  # the adapted statistics exist only in the PyTorch model
        info["adapted_batchnorm_on"] = int(len(images))
    else:
        logits, novelty = model_outputs(bundle, images, backend)
        if novelty is not None:
            check, flagged = bundle.info.novelty, bundle.info.novelty.flagged(novelty)
            refused = novelty > ABSTAIN_NOVELTY_FACTOR * check.threshold
            info["novelty"] = {"threshold": check.threshold, "set_to_flag_on_validation": check.false_alarm_rate,
                               "flagged": float(flagged.mean()), "flagged_images": int(flagged.sum()),
                               "not_classified": float(refused.mean()), "not_classified_images": int(refused.sum())}
    if adapt.endswith("priors"):
        adaptation = PriorAdaptation.of_model(bundle.metadata)
        probs, priors = adaptation.adapt(logits)
        info["estimated_priors"] = dict(zip(SHORT_NAMES, priors.round(4).tolist()))
        info["prior_adaptation"] = adaptation.to_dict()
    else:
        probs = softmax(logits, bundle.temperature)
    return probs, info


def decision_threshold(bundle: Bundle, decision: str = "operating-point") -> float | None:
    """The bundle's operating point, or None (the most probable class) for "argmax" or a bundle without one."""
    from pneumo.inference.decision import DECISIONS

    if decision not in DECISIONS:
        raise ValueError(f"The 'decision' must be one of {DECISIONS}. Got {decision!r} instead.")
    if decision == "argmax":
        return None
    return bundle.info.operating_point.threshold if bundle.info.operating_point else None


def conformal_thresholds(bundle: Bundle, alpha: float | None) -> np.ndarray | None:
    """The bundle's conformal thresholds for coverage 1 - ``alpha`` (None for no sets).

    Raises:
        ValueError: sets asked of a bundle without conformal calibration.
    """
    if alpha is None:
        return None
    if not bundle.info.conformal_scores:
        raise ValueError(f"{bundle.model_id} carries no conformal calibration; fit it with 'pneumo calibrate' "
                         "(validation images) or 'pneumo adapt --labels' (site images)")
    return class_thresholds(bundle.info.conformal_scores, alpha)


def stress_set(bundle: Bundle, data: PreparedData, *, backend: str = "torch", adapt: str = "none",
               resamples: int = 1000, seed: int = 0, decision: str = "operating-point",
               conformal: float | None = None) -> dict:
    """The stress battery (``pneumo.evaluation.stress``) with the bundle's temperature and operating point.

    With ``adapt``, the model adapts to each perturbed set as a whole (see adapted_probabilities).
    """
    from pneumo.evaluation.stress import stress_test

    if data.size != bundle.size:
        raise ValueError(f"images are {data.size} px but the model expects {bundle.size} px")
    threshold = decision_threshold(bundle, decision)
    result = stress_test(lambda images: adapted_probabilities(bundle, images, adapt=adapt, backend=backend)[0],
                         data.images, data.labels, data.patients, threshold=threshold, resamples=resamples, seed=seed,
                         conformal_thresholds=conformal_thresholds(bundle, conformal))
    return {"adapt": adapt, **result}


def predict_set(bundle: Bundle, data: PreparedData, *, adapt: str | bool = "none",
                backend: str = "torch") -> tuple[Predictions, dict]:
    """Probabilities for every image, adapted to this set as ``adapt`` says (see adapted_probabilities).

    ``backend`` "onnx" runs the export beside the bundle instead of the bundle's PyTorch model.
    ``adapt=True`` is "priors" (the older spelling).
    """
    if data.size != bundle.size:
        raise ValueError(f"images are {data.size} px but the model expects {bundle.size} px")
    adapt = {True: "priors", False: "none"}.get(adapt, adapt)
    probs, info = adapted_probabilities(bundle, data.images, adapt=adapt, backend=backend)
    return Predictions(data.paths, data.patients, data.labels, probs), info


def evaluate(bundle: Bundle, data: PreparedData, *, resamples: int = 1000, seed: int = 0, adapt: str | bool = "none",
             source: str = "", backend: str = "torch", stress: bool = False,
             decision: str = "operating-point", conformal: float | None = None) -> tuple[dict, Predictions]:
    """Point metrics, patient-bootstrap 95% CIs and calibration of ``bundle`` on ``data`` (see predict_set).

    With ``stress``, ``metrics["stress"]`` holds the stress battery's results (``stress_set``). With ``conformal``
    (alpha), ``metrics["conformal"]`` holds the coverage and size of the model's conformal class sets, overall,
    per class and (with ``stress``) under each perturbation.
    """
    started = time.perf_counter()
    thresholds = conformal_thresholds(bundle, conformal)  # refused before any work
    predictions, info = predict_set(bundle, data, adapt=adapt, backend=backend)
    threshold = decision_threshold(bundle, decision)
    metrics = summarize(predictions.labels, predictions.probs, threshold)
    metrics["ci95"] = bootstrap(predictions.labels, predictions.probs, predictions.patients, resamples=resamples,
                                seed=seed, threshold=threshold)
    metrics.update(
        model_id=bundle.model_id, model_name=bundle.info.model_name, model_sha256=bundle.file_sha256,
        size=bundle.size, training={**{key: bundle.info.training.get(key)
                                       for key in ("epochs_run", "epoch", "train_seconds_total", "train_images")},
                                    "pretrained": bundle.info.training_config.get("pretrained")},
        data=source, patients=int(len(set(predictions.patients))), bootstrap={"resamples": resamples, "seed": seed,
        "unit": "patient", "level": 0.95}, seconds=round(time.perf_counter() - started, 3), disclaimer=DISCLAIMER,
        **info,
    )
    if thresholds is not None:
        metrics["conformal"] = {"alpha": conformal, **set_metrics(predictions.labels, predictions.probs, thresholds)}
    if stress:
        metrics["stress"] = stress_set(bundle, data, backend=backend, adapt=info["adapt"], resamples=resamples,
                                       seed=seed, decision=decision, conformal=conformal)
        metrics["seconds"] = round(time.perf_counter() - started, 3)
    return metrics, predictions


def write_evaluation(out: Path, metrics: dict, predictions: Predictions) -> list[Path]:
    """metrics.json, predictions.csv, classification_report.txt and the three figures."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    title = metrics["model_id"]
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    (out / "classification_report.txt").write_text(metrics["classification_report_text"])
    predictions.write_csv(out / "predictions.csv")
    return [
        out / "metrics.json", out / "predictions.csv",
        plots.confusion_figure(metrics, out / "confusion.png", title),
        plots.roc_figure(predictions.labels, predictions.probs, out / "roc.png", title),
        plots.reliability_figure(metrics, out / "reliability.png"),
    ]
