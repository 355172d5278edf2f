"""INT8 export: it loads, records what it is, agrees with the float graph within a tolerance, and is sealed."""

import json

import numpy as np
import onnx
import pytest
import torch

from pneumo.errors import ModelFileError
from pneumo.export.int8 import float_nodes
from pneumo.export.onnx import export_onnx
from pneumo.fitting.quantize import quantize_checked
from pneumo.inference.novelty import fit_novelty
from pneumo.models import create_model
from pneumo.models.bundle import load_bundle, save_bundle
from pneumo.predict import Predictor
from tests.conftest import xray_like

SIZE = 64


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    folder = tmp_path_factory.mktemp("int8")
    torch.manual_seed(0)
    model = create_model("mobilenet_v2", num_classes=3).eval()  # has depthwise convolutions to keep in float
    images = np.stack([xray_like(seed, SIZE) for seed in range(48)])
    save_bundle(folder / "model.pt", model, model_name="mobilenet_v2", size=SIZE, id="tiny",
                novelty=fit_novelty(model, "mobilenet_v2", images[:32], images[32:]),
                operating_point={"pneumonia_threshold": 0.5, "target_sensitivity": 0.97})
    bundle = load_bundle(folder)
    export_onnx(bundle, folder / "model.onnx")
    labels = np.arange(16) % 3
    check = quantize_checked(bundle, folder / "model-int8.onnx", train_images=images[:32], val_images=images[32:],
                             val_labels=labels, source="synthetic")
    return folder, check, images


def test_the_int8_file_records_what_it_is_and_its_measured_change(quantized):
    folder, check, _ = quantized
    metadata = Predictor(folder / "model-int8.onnx", backend="onnx").metadata
    record = metadata["quantization"]
    assert record["calibration_images"] == 32 and record["float_nodes"] > 0
    assert record["check"]["images"] == 16 and set(record["check"]["sets"]) >= {"clean", "blur/middle"}
    assert metadata["weights_sha256"] == load_bundle(folder).metadata["weights_sha256"]


def test_depthwise_convolutions_and_the_novelty_check_stay_in_float(quantized):
    folder, _, _ = quantized
    graph = onnx.load(str(folder / "model.onnx"))
    kept = float_nodes(graph)
    depthwise = [n.name for n in graph.graph.node if n.op_type == "Conv"
                 and any(a.name == "group" and a.i > 1 for a in n.attribute)]
    assert depthwise and set(depthwise) <= set(kept) and any(name.startswith("/novelty") for name in kept)


def test_int8_agrees_with_float_within_a_tolerance(quantized):
    folder, _, images = quantized
    float_probs = Predictor(folder, backend="onnx").probabilities(images)
    int8_probs = Predictor(folder / "model-int8.onnx", backend="onnx").probabilities(images)
    # An untrained network's outputs are nearly flat, so int8 rounding moves them by little in absolute terms.
    assert np.abs(float_probs - int8_probs).max() < 0.05


def test_a_tampered_int8_file_is_refused(quantized, tmp_path):
    folder, _, _ = quantized
    graph = onnx.load(str(folder / "model-int8.onnx"))
    entry = next(e for e in graph.metadata_props if e.key == "pneumo")
    metadata = json.loads(entry.value)
    metadata["quantization"]["check"]["accuracy_change"] = 0.25  # a better figure than measured
    entry.value = json.dumps(metadata)
    onnx.save(graph, str(tmp_path / "model-int8.onnx"))
    with pytest.raises(ModelFileError, match="its graph or metadata differ"):
        Predictor(tmp_path / "model-int8.onnx", backend="onnx")
