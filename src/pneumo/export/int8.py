"""INT8 ONNX export: static quantization with ONNX Runtime, calibrated on training images.

MobileNetV2's depthwise convolutions quantize badly (one 3x3 filter per channel leaves per-channel
ranges that int8 cannot hold well: Krishnamoorthi 2018, "Quantizing deep convolutional networks for
efficient inference"), so by default they stay in float, as does the novelty check (its distances
would move with every rounding): only the dense convolutions run in int8 (quantizing the residual
additions and the classifier too costs MobileNetV2 most of its accuracy: benchmarks/README.md)
(QDQ format, per-channel weights, activation ranges from the calibration images; MobileNetV2's ReLU6
bounds them). The file
records that it is quantized, what stayed in float, and how far its answers move from the float
graph's on the images given to check it; ``pneumo export --quantize int8`` measures that on the
validation images and under the stress battery.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import onnx

from pneumo.export.onnx import METADATA_KEY, export_onnx, read_onnx_metadata, seal
from pneumo.files import atomic_path
from pneumo.models.bundle import Bundle

__all__ = ["float_nodes", "quantize_onnx", "record_check"]


def float_nodes(graph: onnx.ModelProto, *, depthwise: bool = True) -> list[str]:
    """The nodes left in float: the novelty check's, and with ``depthwise`` every grouped (depthwise) convolution."""
    kept = []
    for node in graph.graph.node:
        group = next((attribute.i for attribute in node.attribute if attribute.name == "group"), 1)
        if node.name.startswith("/novelty") or (depthwise and node.op_type == "Conv" and group > 1):
            kept.append(node.name)
    return kept


class _Batches:
    """ONNX Runtime's calibration reader over uint8 images (N, S, S), in batches."""

    def __init__(self, images: np.ndarray, batch_size: int = 32):
        self._batches = iter([images[i:i + batch_size, None].astype(np.float32) / 255
                              for i in range(0, len(images), batch_size)])

    def get_next(self) -> dict | None:
        batch = next(self._batches, None)
        return None if batch is None else {"image": batch}


def quantize_onnx(bundle: Bundle, out: str | Path, calibration_images: np.ndarray, *, depthwise_in_float: bool = True,
                  check: dict | None = None) -> Path:
    """Write an INT8 ONNX graph of ``bundle`` to ``out``, with the bundle's metadata and a ``quantization`` record.

    Args:
        bundle: the model to quantize (exported to float ONNX first, novelty check included).
        out: the ``.onnx`` file to write (atomically).
        calibration_images: uint8 (N, S, S) training images whose activations set the int8 ranges.
        depthwise_in_float: keep depthwise convolutions in float (recommended for MobileNetV2).
        check: measured agreement with the float graph, recorded as it is (``quantization.check``).

    Raises:
        ValueError: fewer than 16 calibration images.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if len(calibration_images) < 16:
        raise ValueError(f"INT8 calibration needs at least 16 images. Got {len(calibration_images)} instead.")
    out = Path(out)
    with tempfile.TemporaryDirectory() as folder:
        float_path, int8_path = Path(folder) / "float.onnx", Path(folder) / "int8.onnx"
        export_onnx(bundle, float_path)
        graph = onnx.load(str(float_path))
        kept = float_nodes(graph, depthwise=depthwise_in_float)
        quantize_static(str(float_path), str(int8_path), _Batches(calibration_images),
                        quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv"], per_channel=True,
                        activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, nodes_to_exclude=kept,
                        calibrate_method=CalibrationMethod.MinMax)
        quantized = onnx.load(str(int8_path))
    metadata = {**bundle.metadata, "source_bundle_sha256": bundle.file_sha256}
    metadata["quantization"] = {
        "format": "ONNX Runtime static quantization, QDQ, int8 per-channel weights, uint8 activations "
                  "(ranges: minimum and maximum over the calibration images)",
        "calibration_images": int(len(calibration_images)),
        "int8_op_types": ["Conv"], "float_nodes": len(kept),
        "float_node_kinds": "depthwise convolutions and the novelty check" if depthwise_in_float else "the novelty check",
        "check": check or {},
    }
    del quantized.metadata_props[:]
    entry = quantized.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
    seal(quantized)
    with atomic_path(out) as temporary:
        onnx.save(quantized, str(temporary))
    return out


def record_check(path: str | Path, check: dict) -> None:
    """Write the measured agreement with the float model into a quantized file's metadata, and seal it again.

    Raises:
        ModelFileError: the file fails its own check first (it is never sealed again unverified).
    """
    read_onnx_metadata(path)
    graph = onnx.load(str(path))
    entry = next(e for e in graph.metadata_props if e.key == METADATA_KEY)
    metadata = json.loads(entry.value)
    metadata["quantization"]["check"] = check
    entry.value = json.dumps(metadata)
    seal(graph)
    with atomic_path(path) as temporary:
        onnx.save(graph, str(temporary))
