"""refit_bundle (the one refit path), the temperature and operating point as prediction applies them."""

import numpy as np
import pytest
import torch

from pneumo.export.onnx import export_onnx
from pneumo.fitting.refit import refit_bundle
from pneumo.inference import predict_logits, softmax
from pneumo.inference.calibration import operating_point
from pneumo.inference.decision import decide
from pneumo.models import create_model
from pneumo.models.bundle import load_bundle, save_bundle
from pneumo.predict import Predictor
from tests.conftest import xray_like

SIZE = 64


@pytest.fixture()
def bundle_dir(tmp_path):
    torch.manual_seed(0)
    save_bundle(tmp_path / "model.pt", create_model("cnn", num_classes=3).eval(), model_name="cnn", size=SIZE, id="tiny")
    export_onnx(load_bundle(tmp_path), tmp_path / "model.onnx")
    return tmp_path


def test_refit_in_place_keeps_the_onnx_export_a_pair_and_changes_only_what_it_is_given(bundle_dir):
    before = load_bundle(bundle_dir)
    point = {"pneumonia_threshold": 0.4, "target_sensitivity": 0.97}
    after = refit_bundle(before, temperature=2.0, operating_point=point)
    assert after.metadata["weights_sha256"] == before.metadata["weights_sha256"] and after.model_id == "tiny"
    assert (after.temperature, after.info.operating_point.threshold) == (2.0, 0.4)
    # The ONNX file beside it was exported again from the new bundle: a Predictor accepts the pair.
    onnx = Predictor(bundle_dir, backend="onnx")
    assert onnx.metadata["source_bundle_sha256"] == after.file_sha256 and onnx.temperature == 2.0
    assert not (bundle_dir / "MODEL_CARD.md").exists()  # none before, none written in place


def test_refit_into_a_new_folder_writes_bundle_onnx_and_card_and_leaves_the_source(bundle_dir, tmp_path):
    source = load_bundle(bundle_dir)
    written = refit_bundle(source, out=tmp_path / "new", id="tiny-2", drop=("temperature",))
    assert {p.name for p in (tmp_path / "new").iterdir()} == {"model.pt", "model.onnx", "MODEL_CARD.md"}
    assert written.model_id == "tiny-2" and load_bundle(bundle_dir).model_id == "tiny"


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_prediction_applies_the_temperature(bundle_dir, backend):
    """Probabilities are softmax(logits / T) on both backends: a temperature that were ignored would fail here."""
    refit_bundle(load_bundle(bundle_dir), temperature=2.0)
    images = np.stack([xray_like(seed, SIZE) for seed in range(6)])
    logits = predict_logits(load_bundle(bundle_dir).model, images)
    probs = Predictor(bundle_dir, backend=backend).probabilities(images)
    np.testing.assert_allclose(probs, softmax(logits / 2.0), atol=1e-5)
    assert not np.allclose(probs, softmax(logits), atol=1e-3)


def test_operating_point_is_the_highest_threshold_meeting_the_target():
    # Pneumonia scores 0.9, 0.8, 0.6, 0.3 (four sick images), normals 0.5 and 0.1. For sensitivity >= 0.75 the
    # highest threshold that still catches three of four is 0.6; for 1.0 it is 0.3, the lowest sick score.
    labels = np.array([1, 2, 1, 2, 0, 0])
    scores = np.array([0.9, 0.8, 0.6, 0.3, 0.5, 0.1])
    probs = np.c_[1 - scores, scores * 0.5, scores * 0.5]
    assert operating_point(labels, probs, 0.75) == pytest.approx(0.6)
    assert operating_point(labels, probs, 1.0) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="needs pneumonia images"):
        operating_point(np.zeros(3, int), probs[:3], 0.9)


def test_decision_at_the_threshold_edge_and_a_tie():
    # P(pneumonia) exactly at the threshold counts as pneumonia; a bacterial/viral tie goes to bacterial.
    probs = np.array([[0.6, 0.2, 0.2], [0.61, 0.2, 0.19], [0.2, 0.3, 0.5]])
    assert decide(probs, 0.4).tolist() == [1, 0, 2]
