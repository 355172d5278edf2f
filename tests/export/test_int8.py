"""INT8 export: it loads, records what it is, agrees with the float graph within a tolerance, and is sealed."""

import json
import shutil

import numpy as np
import onnx
import pytest
import torch

from pneumo.errors import ModelFileError
from pneumo.data.readers import load_for_model
from pneumo.export.int8 import float_nodes
from pneumo.export.onnx import export_onnx
from pneumo.fitting.quantize import quantize_checked
from pneumo.inference.novelty import fit_novelty
from pneumo.labels import class_from_name
from pneumo.models import create_model
from pneumo.models.bundle import load_bundle, save_bundle
from pneumo.predict import Predictor
from tests.conftest import REPO, xray_like

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


def test_int8_agrees_with_float_within_a_tolerance(tmp_path, shared_data):
    """On the shipped MobileNetV2, whose depthwise layers are why INT8 needs care, and real X-rays that did not
    calibrate it: an untrained network's outputs barely move with the image, and synthetic images lie outside what
    the trained one knows."""
    shutil.copytree(REPO / "models" / "pneumo-mobilenet", tmp_path / "mobilenet")
    bundle = load_bundle(tmp_path / "mobilenet")
    files = [path for folder in ("NORMAL", "PNEUMONIA") for path in sorted((shared_data / "train" / folder).iterdir())[:40]]
    images = np.stack([load_for_model(path, bundle.size) for path in files])
    labels = np.array([class_from_name(path.parent.name, path.name) for path in files])
    order = np.random.default_rng(0).permutation(len(images))
    calibration, held_out = order[:32], order[32:]
    quantize_checked(bundle, tmp_path / "mobilenet" / "model-int8.onnx", train_images=images[calibration],
                     val_images=images[held_out], val_labels=labels[held_out],
                     source="the shared training split")
    float_logits = Predictor(tmp_path / "mobilenet", backend="onnx").logits(images[held_out])
    int8_logits = Predictor(tmp_path / "mobilenet" / "model-int8.onnx", backend="onnx").logits(images[held_out])
    # The stated tolerance (benchmarks/README.md, "INT8 export"): the INT8 graph follows the float one image by
    # image (a graph that ignored its input would not correlate) and picks the same most probable class for at
    # least 85% of the images.
    for c in range(3):
        assert np.corrcoef(float_logits[:, c], int8_logits[:, c])[0, 1] > 0.9
    assert (float_logits.argmax(1) == int8_logits.argmax(1)).mean() >= 0.85


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
