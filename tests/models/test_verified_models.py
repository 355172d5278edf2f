"""Bundles and ONNX files are checked against the hashes recorded in them before anything is predicted."""

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
    with pytest.raises(ModelFileError, match=r"model.onnx: its weights differ from those it was exported with"):
        Predictor(folder, backend="onnx")


def test_an_onnx_file_beside_another_models_bundle_is_refused(copy_of):
    folder = copy_of("pneumo-mobilenet")
    shutil.copy(SHIPPED / "pneumo-cnn" / "model.onnx", folder / "model.onnx")
    with pytest.raises(ModelFileError, match=r"model.onnx was not exported from the .*model.pt beside it"):
        Predictor(folder, backend="onnx")


def test_the_shipped_files_pass_their_own_checks():
    for name in ("pneumo-cnn", "pneumo-ensemble", "pneumo-mobilenet"):
        assert Predictor(SHIPPED / name, backend="onnx").model_id == name
        assert load_bundle(SHIPPED / name).model_id == name
