"""``quantize_checked``: an INT8 export of a bundle, with what it changes measured before anyone uses it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pneumo.evaluation.stress import BATTERY, perturb
from pneumo.export.int8 import quantize_onnx, record_check
from pneumo.inference import softmax
from pneumo.inference.decision import decide
from pneumo.labels import NORMAL
from pneumo.models.bundle import Bundle
from pneumo.predict import Predictor

__all__ = ["quantize_checked"]

CALIBRATION_IMAGES = 256


def quantize_checked(bundle: Bundle, out: Path, *, train_images: np.ndarray, val_images: np.ndarray,
                     val_labels: np.ndarray, source: str, seed: int = 0) -> dict:
    """Write ``bundle`` as INT8 ONNX to ``out``, calibrated on CALIBRATION_IMAGES of ``train_images``, and record in
    it how its answers differ from the float graph's on the validation images, clean and under every middle-
    severity perturbation of the stress battery. Returns that record.
    """
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(train_images), min(CALIBRATION_IMAGES, len(train_images)), replace=False))
    quantize_onnx(bundle, out, np.asarray(train_images[chosen]))
    float_onnx = Path(bundle.path).with_suffix(".onnx")
    reference = Predictor(bundle.path.parent if float_onnx.is_file() else bundle.path,
                          backend="onnx" if float_onnx.is_file() else "torch")
    quantized = Predictor(out, backend="onnx")
    threshold = reference.threshold
    check = {"images": int(len(val_labels)), "source": source, "sets": {}}
    sets = [("clean", val_images), *((p.name, perturb(val_images, p)) for p in BATTERY if p.severity == "middle")]
    for name, images in sets:
        (float_logits, _), (int8_logits, _) = reference.outputs(images), quantized.outputs(images)
        float_probs, int8_probs = softmax(float_logits, bundle.temperature), softmax(int8_logits, bundle.temperature)
        float_called, int8_called = decide(float_probs, threshold), decide(int8_probs, threshold)
        sick = val_labels != NORMAL
        check["sets"][name] = {
            "accuracy_float": float((float_called == val_labels).mean()),
            "accuracy_int8": float((int8_called == val_labels).mean()),
            # The cut-off and conformal scores were fitted on the float model: what they promise, measured again.
            "sensitivity_float": float((float_called[sick] != NORMAL).mean()) if sick.any() else float("nan"),
            "sensitivity_int8": float((int8_called[sick] != NORMAL).mean()) if sick.any() else float("nan"),
            "argmax_accuracy_float": float((float_probs.argmax(1) == val_labels).mean()),
            "argmax_accuracy_int8": float((int8_probs.argmax(1) == val_labels).mean()),
            "decisions_changed": float((float_called != int8_called).mean()),
            "max_probability_change": float(np.abs(float_probs - int8_probs).max()),
        }
    clean = check["sets"]["clean"]
    check["accuracy_change"] = clean["accuracy_int8"] - clean["accuracy_float"]
    check["worst_middle_accuracy_change"] = min(row["accuracy_int8"] - row["accuracy_float"]
                                                for name, row in check["sets"].items() if name != "clean")
    check["worst_sensitivity_change"] = min(row["sensitivity_int8"] - row["sensitivity_float"]
                                            for row in check["sets"].values())
    record_check(out, check)
    return check
