"""The Python API: ``pneumo.load(...)`` then ``model.predict(...)``.

    >>> import pneumo
    >>> model = pneumo.load()                            # the default; or a name, a run folder, a bundle, an .onnx file
    >>> result = model.predict("xray.jpeg")               # or an array, a PIL image, a list of them
    >>> result.label, result.p_pneumonia, result.reason

Research software, not a diagnostic device.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pneumo import DISCLAIMER
from pneumo.data.readers import ImageInfo, check_not_blank, is_colour, resize, to_gray_uint8
from pneumo.errors import ImageReadError
from pneumo.paths import default_model
from pneumo.predict import Prediction, Predictor

__all__ = ["Model", "load"]


def load(model: str | Path | None = None, *, backend: str = "auto", decision: str = "operating-point",
         conformal: float | None = None, force: bool = False, phi: str = "drop") -> "Model":
    """Load a model for prediction.

    Args:
        model: None for the default model (``paths.default_model()``), a shipped model's name
            (``pneumo-ensemble``, ``pneumo-mobilenet``, ``pneumo-cnn``), a run folder,
            a ``model.pt`` bundle, a model folder or an exported ``.onnx`` file.
        backend: ``auto`` (ONNX Runtime where the model has an export), ``torch`` or ``onnx``.
        decision: ``operating-point`` (the model's threshold on P(pneumonia)) or ``argmax``.
        conformal: alpha of conformal class sets (0.1 for sets that hold the true class of >= 90% of images
            of each class); each result then has ``class_set``. None: no sets.
        force: classify images outside the model's scope (colour pictures, non-radiograph DICOM, images far
            from every training X-ray) instead of answering ``abstained`` with the reason.
        phi: patient identifiers in the results' ``dicom``: ``drop`` (default), ``hash`` (a pseudonym keyed by
            $PNEUMO_PHI_KEY) or ``keep``.

    Raises:
        ModelFileError: no such model, or a model file that fails its integrity checks.
        ValueError: conformal sets asked of a model without their calibration.
    """
    return Model(Predictor(default_model() if model is None else model, backend=backend, decision=decision,
                           conformal=conformal, force=force, phi=phi))


class Model:
    """A loaded model. ``predict`` takes paths, arrays or PIL images; every result carries its reason."""

    disclaimer = DISCLAIMER

    def __init__(self, predictor: Predictor):
        self.predictor = predictor

    @property
    def id(self) -> str:
        return self.predictor.model_id

    @property
    def classes(self) -> list[str]:
        return self.predictor.classes

    @property
    def rule(self) -> str:
        """The decision rule in one sentence."""
        return self.predictor.rule

    def __repr__(self) -> str:
        return f"Model({self.id!r}, backend={self.predictor.backend!r})"

    def predict(self, images: Any, *, gradcam: bool = False) -> Prediction | list[Prediction]:
        """Classify one image or a list of them.

        Args:
            images: a path; a file's bytes; a numpy array (H, W) gray or (H, W, 3|4) RGB(A), any size
                and dtype (integers as they are, floats in [0, 1] times 255, other ranges stretched to
                their minimum and maximum); a PIL image; or a list of these.
            gradcam: also attach a Grad-CAM overlay (RGB uint8, original beside heatmap) as
                ``result.gradcam``.

        Returns:
            One ``Prediction`` for one image (``label``, ``probabilities``, ``p_pneumonia``, ``reason``,
            ``warnings`` from the input checks, ``dicom`` attributes, ``class_set`` when asked for, and
            ``abstained`` with the reason for an image outside the model's scope, whose ``label`` is then not an
            answer); a list for a list, where an image that cannot be read gets ``error`` instead and the rest
            go on.

        Raises:
            ImageReadError: a single image that cannot be read (the message says why).
        """
        single = not isinstance(images, Sequence) or isinstance(images, (str, bytes, bytearray))
        items = [images] if single else list(images)
        sources, prepared, infos, results = [], [], [], []
        for number, item in enumerate(items):
            source = str(item) if isinstance(item, (str, Path)) else f"<{type(item).__name__} {number}>"
            try:
                image, info = self._prepare(item, source)
            except ImageReadError as error:
                if single:
                    raise
                results.append(Prediction(source, error=error.reason))
                continue
            sources.append(source)
            prepared.append(image)
            infos.append(info)
            results.append(None)
        answered = (self.predictor.describe(p, info) for p, info in zip(self.predictor.predict_images(sources, prepared), infos))
        results = [next(answered) if result is None else result for result in results]
        if gradcam:
            good = [r for r in results if r.ok]
            for result, overlay in zip(good, self.predictor.explain(good)):
                result.gradcam = overlay
        return results[0] if single else results

    def _prepare(self, item: Any, source: str) -> tuple[np.ndarray, ImageInfo]:
        """One input as the (S, S) uint8 image the model takes, with what is known of it."""
        if isinstance(item, (str, Path)):
            return self.predictor.load(str(item))
        if isinstance(item, (bytes, bytearray)):  # a file's content, e.g. from a request or a database
            return self.predictor.load(source, bytes(item))
        if type(item).__module__.startswith("PIL."):
            item = _pil_array(item)
        if not isinstance(item, np.ndarray):
            raise ImageReadError(source, f"cannot classify a {type(item).__name__}; pass a path, bytes, a numpy array "
                                         "or a PIL image")
        if not (item.ndim == 2 or (item.ndim == 3 and item.shape[2] in (1, 3, 4))) or min(item.shape[:2]) < 1:
            raise ImageReadError(source, f"an array of shape {item.shape} is not an image; pass (H, W) gray or "
                                         "(H, W, 3) RGB")
        item = _standard_depth(item)
        if item.ndim == 3 and item.shape[2] in (3, 4):
            item = cv2.cvtColor(np.ascontiguousarray(item), cv2.COLOR_RGB2BGR if item.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
        gray = to_gray_uint8(item, source)
        check_not_blank(gray, source)
        return resize(gray, self.predictor.size), ImageInfo(gray.shape[1], gray.shape[0], colour=is_colour(item))


def _standard_depth(array: np.ndarray) -> np.ndarray:
    """8 or 16 bits where the values fit (integers 0-255 or 0-65535, floats 0-1 scaled by 255), else float32,
    which is then stretched from its minimum to its maximum; OpenCV converts colour only in these depths."""
    if array.dtype in (np.uint8, np.uint16):
        return array
    low, high = float(array.min()), float(array.max())
    if np.issubdtype(array.dtype, np.integer) and low >= 0 and high <= 65535:
        return array.astype(np.uint8 if high <= 255 else np.uint16)
    if np.issubdtype(array.dtype, np.floating) and low >= 0 and high <= 1:
        return np.round(array * 255).astype(np.uint8)
    return array.astype(np.float32)


def _pil_array(image) -> np.ndarray:
    """A PIL image as an array at its own depth: 16-bit grey stays 16-bit; palettes and other modes become RGB."""
    if image.mode in ("L", "I;16", "I;16B", "I;16L", "I", "F", "RGB", "RGBA"):
        return np.asarray(image)
    return np.asarray(image.convert("RGBA" if "A" in image.mode else "RGB"))
