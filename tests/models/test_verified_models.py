"""Bundles and ONNX files are checked against the hashes recorded in them before anything is predicted."""

import json
import shutil

import onnx
import onnx.numpy_helper
import pytest
import torch

from pneumo.errors import ModelFileError
from pneumo.models.bundle import load_bundle
from pneumo.predict import Predictor
from tests.conftest import REPO

SHIPPED = REPO / "models"


@pytest.fixture()
def copy_of(tmp_path):
    def copy(name: str):
        target = tmp_path / name
        shutil.copytree(SHIPPED / name, target)
        return target
    return copy


def test_a_bundle_with_altered_weights_is_refused(copy_of):
    folder = copy_of("pneumo-cnn")
    content = torch.load(folder / "model.pt", weights_only=True)
    weights = content["state_dict"]["features.0.weight"]
    weights[0, 0, 0, 0] += 0.01  # one weight of the first convolution
    torch.save(content, folder / "model.pt")
    with pytest.raises(ModelFileError, match=r"model.pt: its weights do not match the weights_sha256 recorded in it"):
        load_bundle(folder)


def test_an_onnx_file_with_altered_weights_is_refused(copy_of):
    folder = copy_of("pneumo-cnn")
    graph = onnx.load(str(folder / "model.onnx"))
    tensor = max(graph.graph.initializer, key=lambda t: t.name)
    tensor.CopyFrom(onnx.numpy_helper.from_array(-onnx.numpy_helper.to_array(tensor), tensor.name))
    onnx.save(graph, str(folder / "model.onnx"))
    (folder / "model.pt").unlink()  # the ONNX file alone must still catch it
    with pytest.raises(ModelFileError, match=r"model.onnx: its graph or metadata differ from those it was exported"):
        Predictor(folder, backend="onnx")


def _edit_onnx_metadata(path, change):
    graph = onnx.load(str(path))
    entry = next(e for e in graph.metadata_props if e.key == "pneumo")
    metadata = json.loads(entry.value)
    change(metadata)
    entry.value = json.dumps(metadata)
    onnx.save(graph, str(path))


@pytest.mark.parametrize("change", [
    lambda m: m.update(temperature=m["temperature"] * 50),
    lambda m: m["operating_point"].update(pneumonia_threshold=0.999),
])
def test_an_onnx_file_whose_temperature_or_cut_off_was_edited_is_refused(copy_of, change):
    folder = copy_of("pneumo-cnn")
    _edit_onnx_metadata(folder / "model.onnx", change)
    with pytest.raises(ModelFileError, match=r"its graph or metadata differ from those it was exported with"):
        Predictor(folder, backend="onnx")


def test_an_onnx_file_with_an_added_node_is_refused(copy_of):
    """A Constant and an Add on the logits would force every answer; the graph's hash catches it."""
    folder = copy_of("pneumo-cnn")
    graph = onnx.load(str(folder / "model.onnx"))
    logits = graph.graph.output[0].name
    graph.graph.node.append(onnx.helper.make_node("Constant", [], ["shift"], value=onnx.helper.make_tensor(
        "shift", onnx.TensorProto.FLOAT, [3], [100.0, 0.0, 0.0])))
    for node in graph.graph.node:
        node.output[:] = [f"{name}_raw" if name == logits else name for name in node.output]
    graph.graph.node.append(onnx.helper.make_node("Add", [f"{logits}_raw", "shift"], [logits]))
    onnx.save(graph, str(folder / "model.onnx"))
    with pytest.raises(ModelFileError, match=r"its graph or metadata differ"):
        Predictor(folder, backend="onnx")


def test_a_bundle_whose_metadata_was_edited_is_refused(copy_of):
    folder = copy_of("pneumo-cnn")
    content = torch.load(folder / "model.pt", weights_only=True)
    metadata = json.loads(content["metadata"])
    metadata["temperature"] = 5.0
    content["metadata"] = json.dumps(metadata)
    torch.save(content, folder / "model.pt")
    with pytest.raises(ModelFileError, match=r"its metadata \(temperature, operating point, ...\) does not match"):
        load_bundle(folder)


def test_a_pinned_sha256_refuses_any_other_file(copy_of):
    folder = copy_of("pneumo-cnn")
    right = Predictor(folder, backend="onnx").sha256
    assert Predictor(folder, backend="onnx", expected_sha256=right.upper()).sha256 == right
    with pytest.raises(ModelFileError, match=r"not the pinned"):
        Predictor(folder, backend="onnx", expected_sha256="0" * 64)


def test_an_onnx_file_beside_another_models_bundle_is_refused(copy_of):
    folder = copy_of("pneumo-mobilenet")
    shutil.copy(SHIPPED / "pneumo-cnn" / "model.onnx", folder / "model.onnx")
    with pytest.raises(ModelFileError, match=r"model.onnx was not exported from the .*model.pt beside it"):
        Predictor(folder, backend="onnx")


def test_the_shipped_files_pass_their_own_checks():
    for name in ("pneumo-cnn", "pneumo-ensemble", "pneumo-mobilenet"):
        assert Predictor(SHIPPED / name, backend="onnx").model_id == name
        assert load_bundle(SHIPPED / name).model_id == name
