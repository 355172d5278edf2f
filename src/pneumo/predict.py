"""``Predictor``: files or bytes in, class probabilities (and Grad-CAM) out.

Two backends with the same answers: ``torch`` (the bundle's model) and ``onnx``
(onnxruntime on the exported graph, faster on CPU). Both apply the bundle's temperature and
operating point, and its novelty check where it has one. Decoding runs in threads (OpenCV
releases the GIL).
"""

from __future__ import annotations

import glob
import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pneumo import DISCLAIMER
from pneumo.inference.adaptation import ADAPT_MODES, adapt_batchnorm
from pneumo.data.readers import ImageInfo, decode_image, read_image, resize
from pneumo.errors import ImageReadError, ModelFileError
from pneumo.inference.calibration import PriorAdaptation
from pneumo.inference.decision import DECISIONS, decide, reason, rule
from pneumo.inference import predict_logits, softmax
from pneumo.inference.checks import input_warnings, scope_refusal
from pneumo.inference.conformal import class_sets, class_thresholds, set_name
from pneumo.inference.novelty import logits_and_novelty, novelty_warning
from pneumo.labels import SHORT_NAMES
from pneumo.models.info import ModelInfo
from pneumo.paths import resolve_model
from pneumo.privacy import Identifiers
from pneumo.text import csv_cell

BACKENDS = ("torch", "onnx", "auto")
IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"}


@dataclass
class Prediction:
    """The answer for one image."""

    source: str
    label: str = ""
    probabilities: dict[str, float] = field(default_factory=dict)
    error: str = ""
    image: np.ndarray | None = field(default=None, repr=False)  # (S, S) uint8, as the model saw it
    reason: str = ""  # why this class: the rule, P(pneumonia) and the threshold (pneumo.inference.decision)
    gradcam: np.ndarray | None = field(default=None, repr=False)  # overlay, when asked for (pneumo.api)
    warnings: list[str] = field(default_factory=list)  # input checks (pneumo.inference.checks, .novelty)
    dicom: dict[str, str] = field(default_factory=dict)  # what a DICOM file says of itself (readers.DICOM_FIELDS)
    novelty: float | None = None  # how unlike the training X-rays (pneumo.inference.novelty); None: no check
    novelty_threshold: float | None = None  # the model's threshold: above it, the image is flagged
    class_set: list[str] | None = None  # conformal class set (short names), when asked for
    abstained: str = ""  # why the image was not classified (outside the model's scope); empty when it was

    @property
    def ok(self) -> bool:
        return not self.error

    @property
    def classified(self) -> bool:
        return self.ok and not self.abstained

    @property
    def set_text(self) -> str:
        """The conformal class set in words ("bacterial or viral pneumonia"); empty when none was asked for."""
        if self.class_set is None:
            return ""
        return set_name(np.array([name in self.class_set for name in SHORT_NAMES]))

    @property
    def p_pneumonia(self) -> float:
        return 1 - self.probabilities["normal"]

    def as_dict(self) -> dict:
        if not self.ok:
            return {"file": self.source, "error": self.error}
        if self.abstained:  # no class and no probabilities: numbers for an image out of scope would only mislead
            return {"file": self.source, "class": None, "not_classified": self.abstained, "reason": self.reason,
                    "warnings": self.warnings, **self._novelty_dict(), **({"dicom": self.dicom} if self.dicom else {})}
        return {"file": self.source, "class": self.label, "probabilities": self.probabilities,
                "p_pneumonia": round(self.p_pneumonia, 6), "reason": self.reason, "warnings": self.warnings,
                **({"class_set": self.class_set, "class_set_text": self.set_text} if self.class_set is not None else {}),
                **self._novelty_dict(), **({"dicom": self.dicom} if self.dicom else {})}

    @property
    def novelty_flagged(self) -> bool | None:
        """Whether the novelty check flags the image; None without a check."""
        if self.novelty is None or self.novelty_threshold is None:
            return None
        return self.novelty > self.novelty_threshold

    def _novelty_dict(self) -> dict:
        return ({"novelty": {"score": round(self.novelty, 4), "threshold": round(self.novelty_threshold, 4),
                             "flagged": self.novelty_flagged}} if self.novelty_flagged is not None else {})

    def describe_input(self, info: ImageInfo) -> "Prediction":
        """Attach the input checks' warnings (before the novelty check's) and the DICOM attributes of the file."""
        self.warnings, self.dicom = input_warnings(info) + self.warnings, dict(info.dicom)
        return self


@dataclass(frozen=True)
class Inputs:
    """What a list of files, folders and patterns names: the image files, and the files in the folders that are
    not images (skipped, never silently)."""

    files: list[str]
    skipped: list[str]


def has_dicom_preamble(path: Path) -> bool:
    """True for a file with the DICOM preamble (``DICM`` at byte 128), as PACS exports write them without a suffix."""
    try:
        with path.open("rb") as handle:
            return handle.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def find_inputs(inputs: list[str]) -> Inputs:
    """Files, folders (searched recursively: image suffixes, and any file with the DICOM preamble, such as a PACS
    export's ``SERIES1/IM00001``) and glob patterns. A path that matches nothing is kept, so that it is reported
    as 'file not found'."""
    files: list[str] = []
    skipped: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for found in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
                if found.suffix.lower() in IMAGE_SUFFIXES or has_dicom_preamble(found):
                    files.append(str(found))
                else:
                    skipped.append(str(found))
        elif any(ch in item for ch in "*?[") and not path.exists():
            files += sorted(glob.glob(item, recursive=True))
        else:
            files.append(item)
    return Inputs(files, skipped)


def expand_inputs(inputs: list[str]) -> list[str]:
    """The image files that ``inputs`` name (``find_inputs``)."""
    return find_inputs(inputs).files


def read_for_model(source: str, size: int, data: bytes | None = None, *, max_decoded_bytes: int | None = None
                   ) -> tuple[np.ndarray, ImageInfo]:
    """One file (or its bytes) as the (size, size) uint8 image a model takes, with its ImageInfo; raises ImageReadError."""
    if data is not None:
        image, info = decode_image(data, source, max_decoded_bytes=max_decoded_bytes)
    else:
        image, info = read_image(source, max_decoded_bytes=max_decoded_bytes)
    return resize(image, size), info


def load_images(files: list[str], size: int, *, workers: int = 4
                ) -> tuple[list[tuple[str, np.ndarray, ImageInfo]], list[tuple[str, str]]]:
    """Read and resize files in threads, in order: ([(file, (size, size) uint8 image, its ImageInfo)],
    [(file, why it failed)])."""

    def load(source: str) -> tuple[np.ndarray, ImageInfo] | str:
        try:
            return read_for_model(source, size)
        except ImageReadError as error:
            return error.reason

    with ThreadPoolExecutor(workers) as pool:
        loaded = list(pool.map(load, files))
    good = [(source, *item) for source, item in zip(files, loaded) if not isinstance(item, str)]
    bad = [(source, item) for source, item in zip(files, loaded) if isinstance(item, str)]
    return good, bad


class Predictor:
    """A loaded model and its metadata, ready to classify images.

    Args:
        model: a shipped model's name (``pneumo-mobilenet``), a run folder, a ``model.pt`` bundle, a
            folder holding ``model.pt`` / ``model.onnx``, or an ``.onnx`` file exported by pneumo.
        backend: ``torch``, ``onnx``, or ``auto``: ONNX Runtime (faster on a CPU) where the model has an
            ONNX export (a ``model.onnx`` beside its bundle), else PyTorch.
        threads: ONNX Runtime's intra-op threads (default: its own choice, all cores).
        decision: ``operating-point`` (the model's threshold on P(pneumonia), where it has one) or
            ``argmax`` (the most probable class).
        conformal: alpha of conformal class sets (0.1: each set holds the true class for >= 90% of images of
            each class, on images like the calibration ones); None: no sets.
        force: classify images outside the model's scope too (``checks.scope_refusal``) instead of refusing them.
        expected_sha256: the sha256 the file the backend runs (model.pt, or the .onnx file) must have: a pin for
            deployments, since a hash recorded inside a file detects damage but not a deliberate edit.
        phi: patient identifiers in the answers (``pneumo.privacy``): ``drop`` (default), ``hash`` (a keyed
            pseudonym; the secret in $PNEUMO_PHI_KEY) or ``keep``.

    Raises:
        ModelFileError: a file that fails its integrity checks, or whose sha256 is not ``expected_sha256``.
        ValueError: an unknown backend or decision, conformal sets asked of a model without their calibration, or
            ``phi="hash"`` without a usable secret.
    """

    def __init__(self, model: str | Path, *, backend: str = "torch", threads: int | None = None,
                 decision: str = "operating-point", conformal: float | None = None, force: bool = False,
                 expected_sha256: str | None = None, phi: str = "drop"):
        if backend not in BACKENDS:
            raise ValueError(f"The 'backend' must be one of {BACKENDS}. Got {backend!r} instead.")
        if decision not in DECISIONS:
            raise ValueError(f"The 'decision' must be one of {DECISIONS}. Got {decision!r} instead.")
        self.bundle = None
        path = resolve_model(model)
        self.path = path  # the model's folder or file, resolved
        self._folder = path if path.is_dir() else path.parent
        if backend == "auto":
            backend = "onnx" if path.suffix == ".onnx" or (self._folder / "model.onnx").is_file() else "torch"
        self.backend = backend
        if backend == "onnx":
            self._load_onnx(path, threads)
        else:
            from pneumo.models.bundle import load_bundle

            self.bundle = load_bundle(path)
            self.metadata = self.bundle.metadata
            self.sha256 = self.bundle.file_sha256
        if expected_sha256 is not None and self.sha256 != expected_sha256.strip().lower():
            raise ModelFileError(f"{model}: the {self.backend} model file has sha256 {self.sha256}, not the pinned "
                                 f"{expected_sha256}; it is not the file this deployment was given")
        self.info = ModelInfo.of(self.metadata)
        self.size, self.temperature, self.model_id = self.info.size, self.info.temperature, self.info.model_id
        self.prior_adaptation = PriorAdaptation.of_model(self.metadata)
        point = self.info.operating_point
        # The operating point where the model has one (and it is asked for), else the most probable class.
        self.threshold = point.threshold if point and decision == "operating-point" else None
        self.point_source = point.source if point else ""
        self.novelty_check = self.info.novelty  # None: the model has none
        self.force = force
        self.identifiers = Identifiers.from_environment(phi)  # refused here, before any file is read, when unusable
        self.conformal = conformal
        self.conformal_thresholds = None
        if conformal is not None:
            if not self.info.conformal_scores:
                raise ValueError(f"{self.model_id} carries no conformal calibration; fit it with 'pneumo calibrate' "
                                 "(validation images) or 'pneumo adapt --labels' (site images)")
            self.conformal_thresholds = class_thresholds(self.info.conformal_scores, conformal)

    def _load_onnx(self, path: Path, threads: int | None) -> None:
        import onnxruntime

        from pneumo.export.onnx import read_onnx_metadata

        onnx_path = path / "model.onnx" if path.is_dir() else path
        if not onnx_path.is_file():
            raise ModelFileError(f"{onnx_path}: no ONNX model; run 'pneumo export --model {path} --format onnx' first")
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.metadata = read_onnx_metadata(onnx_path)
        beside = onnx_path.parent / "model.pt"
        if beside.is_file():
            # A bundle beside the file is used for Grad-CAM and adaptation: it must be the one exported.
            bundle_sha256 = hashlib.sha256(beside.read_bytes()).hexdigest()
            if self.metadata.get("source_bundle_sha256") != bundle_sha256:
                raise ModelFileError(f"{onnx_path} was not exported from the {beside} beside it; export it again with "
                                     f"'pneumo export --model {onnx_path.parent}', or keep the two apart")
        try:
            self.session = onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own exception types for graphs it cannot run
            raise ModelFileError(f"{onnx_path}: ONNX Runtime cannot run this graph ({type(error).__name__}: "
                                 f"{str(error).splitlines()[0][:200]}); export it again with 'pneumo export'") from None
        self.sha256 = hashlib.sha256(onnx_path.read_bytes()).hexdigest()

    @property
    def classes(self) -> list[str]:
        return list(self.info.classes)

    def logits(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """(N, K) logits for (N, S, S) uint8 images."""
        if self.backend == "torch":
            return predict_logits(self.bundle.model, images, batch_size=batch_size)
        return self._onnx_outputs(images, ["logits"], batch_size)[0]

    def outputs(self, images: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray | None]:
        """(N, K) logits and (N,) novelty for (N, S, S) uint8 images; novelty is None for a model without the check."""
        if self.backend == "torch":
            return logits_and_novelty(self.bundle.model, self.bundle.novelty, images, batch_size=batch_size)
        if self.novelty_check is None:
            return self.logits(images, batch_size), None
        return tuple(self._onnx_outputs(images, ["logits", "novelty"], batch_size))

    def _onnx_outputs(self, images: np.ndarray, names: list[str], batch_size: int) -> list[np.ndarray]:
        """The ONNX graph's ``names`` outputs for (N, S, S) uint8 images, in batches."""
        batches = [self.session.run(names, {"image": images[start:start + batch_size, None].astype(np.float32) / 255})
                   for start in range(0, len(images), batch_size)]
        if not batches:
            return [np.zeros((0, len(self.classes)), np.float32), np.zeros(0, np.float32)][:len(names)]
        return [np.concatenate([batch[i] for batch in batches]) for i in range(len(names))]

    def probabilities(self, images: np.ndarray, *, adapt: bool | str = False) -> np.ndarray:
        """Calibrated probabilities, adapted to this batch as ``adapt`` says.

        ``adapt``: "none" (or False); "priors" (or True): EM re-estimates the batch's class
        priors; "bn": AdaBN re-estimates BatchNorm statistics on the batch (PyTorch model, also
        under the ONNX backend); "bn+priors": both.
        """
        return self._calibrated(images, None, adapt)

    def _calibrated(self, images: np.ndarray, logits: np.ndarray | None, adapt: bool | str) -> np.ndarray:
        """``probabilities``, from the model's ``logits`` of ``images`` where already computed (None: not yet)."""
        adapt = {True: "priors", False: "none"}.get(adapt, adapt)
        if adapt not in ADAPT_MODES:
            raise ValueError(f"The 'adapt' option must be one of {ADAPT_MODES}. Got {adapt!r} instead.")
        if adapt.startswith("bn"):
            logits = predict_logits(adapt_batchnorm(self._torch_bundle().model, images), images)
        elif logits is None:
            logits = self.logits(images)
        if adapt.endswith("priors") and len(logits):
            return self.prior_adaptation.adapt(logits)[0]
        return softmax(logits, self.temperature)

    def _torch_bundle(self):
        """The PyTorch bundle: the loaded one, or under the ONNX backend the ``model.pt`` beside the file."""
        if self.bundle is None:
            from pneumo.models.bundle import load_bundle

            try:
                self.bundle = load_bundle(self._folder)
            except ModelFileError as error:
                raise ModelFileError(f"this needs the PyTorch bundle next to the ONNX file: {error}") from None
        return self.bundle

    def load(self, source: str, data: bytes | None = None, *, max_decoded_bytes: int | None = None
             ) -> tuple[np.ndarray, ImageInfo]:
        """Read (or decode given bytes) and resize one image, with its ImageInfo; raises ImageReadError.

        ``max_decoded_bytes`` overrides the readers' limit on the decoded image size.
        """
        return read_for_model(source, self.size, data, max_decoded_bytes=max_decoded_bytes)

    def predict_images(self, sources: list[str], images: list[np.ndarray], *, adapt: bool | str = False) -> list[Prediction]:
        if not images:
            return []
        stack = np.stack(images)
        # The novelty is the model's own (under --adapt bn too): it measures the image against the training X-rays.
        # Under bn the answer comes from the adapted model, so the unadapted pass is only for the novelty.
        adapted_bn = str(adapt).startswith("bn")
        logits, novelty = self.outputs(stack) if self.novelty_check is not None or not adapted_bn else (None, None)
        probs = self._calibrated(stack, logits, adapt)
        labels = decide(probs, self.threshold)
        sets = class_sets(probs, self.conformal_thresholds) if self.conformal_thresholds is not None else None
        predictions = [
            Prediction(source, self.classes[label], dict(zip(SHORT_NAMES, map(float, p.round(6)))), image=image,
                       reason=reason(p, label, self.threshold, self.point_source),
                       class_set=None if sets is None else [SHORT_NAMES[c] for c in np.flatnonzero(sets[i])])
            for i, (source, label, p, image) in enumerate(zip(sources, labels, probs, images))
        ]
        for prediction, score in zip(predictions, novelty if novelty is not None else []):
            prediction.novelty, prediction.novelty_threshold = float(score), self.novelty_check.threshold
            warning = novelty_warning(float(score), self.novelty_check)
            prediction.warnings += [warning] if warning else []
        return predictions

    @property
    def rule(self) -> str:
        """The decision rule in one sentence."""
        return rule(self.threshold, self.point_source)

    def answered_by(self, adapt: str = "none") -> tuple[str, str]:
        """(backend, sha256 of the file it ran) of the answers under ``adapt``: BatchNorm adaptation exists only in the
        PyTorch model, so its answers come from the bundle whatever backend was asked for."""
        if str(adapt).startswith("bn"):
            return "torch", self._torch_bundle().file_sha256
        return self.backend, self.sha256

    def describe(self, prediction: Prediction, info: ImageInfo) -> Prediction:
        """Attach what the file says of itself (``Prediction.describe_input``), and withdraw the class of an image
        outside the model's scope (``checks.scope_refusal``) unless this predictor forces an answer."""
        prediction.describe_input(info)
        prediction.dicom = self.identifiers.apply(prediction.dicom)
        refusal = scope_refusal(info, prediction.novelty, self.novelty_check)
        if refusal and not self.force:
            # No class left to misread: label and probabilities go, the reason says why.
            prediction.abstained, prediction.label, prediction.probabilities = refusal, "", {}
            prediction.reason = f"not classified: {refusal} (force classifies it anyway)"
        return prediction

    def predict_files(self, files: list[str], *, adapt: bool | str = False, workers: int = 4) -> list[Prediction]:
        """Predictions in the order of ``files``; a bad file gets ``error`` and the rest go on."""
        good, bad = load_images(files, self.size, workers=workers)
        predictions = self.predict_images([s for s, _, _ in good], [i for _, i, _ in good], adapt=adapt)
        answered = {source: self.describe(p, info) for (source, _, info), p in zip(good, predictions)}
        errors = dict(bad)
        return [answered[s] if s in answered else Prediction(s, error=errors[s]) for s in files]

    def explain(self, predictions: list[Prediction], *, member: int | None = None) -> list[np.ndarray]:
        """Grad-CAM overlays (original beside heatmap, RGB uint8) for successful predictions.

        For an ensemble, ``member`` picks one member to explain; by default its members' heatmaps are averaged.
        """
        from pneumo.explain.gradcam import gradcam, overlay

        bundle = self._torch_bundle()  # gradients need PyTorch, also under the ONNX backend
        ok = [p for p in predictions if p.classified]
        if not ok:
            return []
        classes = [self.classes.index(p.label) for p in ok]
        heatmaps = gradcam(bundle.model, self.info.model_name, np.stack([p.image for p in ok]), classes,
                           member=member)
        which = "" if member is None else f" (member {member})"
        return [overlay(p.image, heat, caption=f"{Path(p.source).name}: regions that most raised {self.model_id}{which}'s "
                                               f"score for {p.label} (Grad-CAM). Research use only.")
                for p, heat in zip(ok, heatmaps)]


def predictions_json(predictor: Predictor, predictions: list[Prediction], *, adapt: str = "none",
                     overlays: dict[str, str] | None = None, skipped: list[str] = ()) -> str:
    """The JSON document of ``predict --json``: the model, its rule, the disclaimer, one entry per file, and the
    files found in folders that are neither images nor DICOM (``skipped``)."""
    import json

    overlays = overlays or {}
    rows = [dict(p.as_dict(), **({"gradcam": overlays[p.source]} if p.source in overlays else {})) for p in predictions]
    backend, sha256 = predictor.answered_by(adapt)
    return json.dumps({"model": predictor.model_id, "model_sha256": sha256, "backend": backend,
                       "decision_rule": predictor.rule, "conformal_alpha": predictor.conformal,
                       "adapt": adapt, "adapt_priors": adapt.endswith("priors"),
                       "patient_identifiers": predictor.identifiers.mode, "disclaimer": DISCLAIMER,
                       "predictions": rows, "skipped": list(skipped)}, indent=1)


def predictions_csv(predictions: list[Prediction], model_id: str = "") -> str:
    """The CSV of ``predict --csv``: one row per file, probabilities, reason, warnings, DICOM attributes, error,
    and the model that answered (so that a saved file says where its answers came from)."""
    import csv
    import io

    from pneumo.data.readers import DICOM_FIELDS

    buffer = io.StringIO()
    writer = _SafeWriter(csv.writer(buffer))
    writer.writerow(["file", "class", *[f"p_{name}" for name in SHORT_NAMES], "p_pneumonia", "class_set", "reason",
                     "warnings", "novelty", "novelty_threshold", *DICOM_FIELDS, "error", "model"])
    for p in predictions:
        shown = p.classified
        probs = [f"{p.probabilities[name]:.6f}" for name in SHORT_NAMES] if shown else [""] * len(SHORT_NAMES)
        writer.writerow([p.source, "not classified" if p.abstained else p.label, *probs,
                         f"{p.p_pneumonia:.6f}" if shown else "", p.set_text, p.reason,
                         "; ".join(p.warnings), "" if p.novelty is None else f"{p.novelty:.4f}",
                         "" if p.novelty is None else f"{p.novelty_threshold:.4f}",
                         *[p.dicom.get(key, "") for key in DICOM_FIELDS], p.error, model_id])
    return buffer.getvalue()


class _SafeWriter:
    """A csv writer whose every cell is safe to open in a spreadsheet (``console.csv_cell``)."""

    def __init__(self, writer):
        self._writer = writer

    def writerow(self, row: list) -> None:
        self._writer.writerow([csv_cell(cell) for cell in row])


__all__ = ["Inputs", "Predictor", "Prediction", "expand_inputs", "find_inputs", "predictions_csv", "predictions_json",
           "DISCLAIMER"]
