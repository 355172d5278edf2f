"""The novelty check: its arithmetic, where its features come from, how it travels in bundles and ONNX
files, and that the shipped models flag images that are not X-rays."""

from __future__ import annotations

import csv
import io
import hashlib
import json

import numpy as np
import pytest
import torch

from pneumo.errors import ModelFileError
from pneumo.evaluation.not_xrays import not_xray_images
from pneumo.inference.logits import logits_and_features
from pneumo.inference.checks import scope_refusal
from pneumo.inference.novelty import fit_novelty, novelty_warning
from pneumo.models.novelty import FeatureTap, Novelty, feature_layers
from pneumo.models.bundle import carried_metadata, load_bundle, save_bundle, weights_sha256
from pneumo.models.ensemble import Ensemble
from pneumo.models.info import NoveltyInfo
from pneumo.models.registry import create_model
from tests.conftest import REPO, xray_like

SIZE = 64


@pytest.fixture(scope="module")
def cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("cnn", num_classes=3).eval()


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.stack([xray_like(seed, SIZE) for seed in range(40)])


def test_training_images_score_n_minus_1_over_n_per_dimension(cnn, images):
    # Whitened PCA scores have variance 1 with ddof=1, so their mean square over the n fitting images is
    # (n - 1) / n in every kept dimension, and so is the per-dimension mean the score is.
    novelty = fit_novelty(cnn, "cnn", images[:30], images[30:])
    _, features = logits_and_features(cnn, images[:30], ["head"])
    assert novelty.score(features).mean() == pytest.approx(29 / 30, rel=1e-4)
    assert novelty.description["components"] == [29]  # at most n - 1 directions


def test_threshold_flags_at_most_the_false_alarm_rate_of_validation(cnn, images):
    novelty = fit_novelty(cnn, "cnn", images[:20], images[20:], false_alarm=0.1)
    _, features = logits_and_features(cnn, images[20:], ["head"])
    flagged = novelty.score(features) > novelty.threshold
    assert flagged.mean() <= 0.1 and flagged.sum() == 1  # 20 validation images: the highest one is over
    assert novelty.description["val_flagged"] == flagged.mean()


def test_fit_refuses_bad_options(cnn, images):
    with pytest.raises(ValueError, match="The 'false_alarm' rate must be in"):
        fit_novelty(cnn, "cnn", images[:10], images[10:], false_alarm=0.7)
    with pytest.raises(ValueError, match="at least 3 training"):
        fit_novelty(cnn, "cnn", images[:2], images[10:])


def test_tap_records_the_input_of_the_classification_head(cnn, images):
    batch = torch.from_numpy(images[:4]).float().div(255)[:, None]
    assert feature_layers("cnn", cnn) == ["head"]
    with torch.no_grad(), FeatureTap(cnn, ["head"]) as tap:
        cnn(batch)
        by_hand = cnn.pool(cnn.features(batch)).flatten(1)  # what enters the head, flattened
    assert tap.features[0].shape == (4, 256 * 16) and torch.allclose(tap.features[0], by_hand)
    assert not cnn.head._forward_pre_hooks  # hooks are gone after the block


def test_tap_ignores_another_threads_pass_through_the_same_model(cnn, images):
    import threading

    mine = torch.from_numpy(images[:2]).float().div(255)[:, None]
    theirs = torch.from_numpy(images[2:4]).float().div(255)[:, None]
    with torch.no_grad(), FeatureTap(cnn, ["head"]) as tap:
        other = threading.Thread(target=lambda: cnn(theirs))  # runs first, while the hooks are on
        other.start()
        other.join()
        cnn(mine)
        expected = cnn.pool(cnn.features(mine)).flatten(1)
    assert torch.allclose(tap.features[0], expected)


def test_ensemble_features_are_each_members_on_the_image_as_given(images):
    torch.manual_seed(0)
    members = [create_model("cnn", num_classes=3).eval() for _ in range(2)]
    ensemble = Ensemble(members, names=["cnn", "cnn"], sizes=[SIZE, SIZE // 2], temperatures=[1.0, 1.0],
                        views=(1.0, 0.9)).eval()
    batch = torch.from_numpy(images[:3]).float().div(255)[:, None]
    layers = feature_layers("ensemble", ensemble)
    assert layers == ["members.0.head", "members.1.head"]
    with torch.no_grad(), FeatureTap(ensemble, layers) as tap:
        ensemble(batch)
        expected = [FeatureTap(member, ["head"]) for member in members]
        for index, (member, member_tap) in enumerate(zip(members, expected)):
            with member_tap:
                member(ensemble.member_input(batch, index))
    assert len(tap.features) == 2
    for got, want in zip(tap.features, expected):
        assert torch.allclose(got, want.features[0], atol=1e-6)


def test_score_is_the_mean_whitened_squared_distance():
    # One layer, two dimensions: mean (1, 2), projection diag(1/2, 1): feature (3, 5) -> z = (1, 3) -> (1 + 9) / 2.
    novelty = Novelty(["head"], [torch.tensor([1.0, 2.0])], [torch.diag(torch.tensor([0.5, 1.0]))], threshold=4.0)
    assert novelty.score([np.array([[3.0, 5.0]], np.float32)]) == pytest.approx([5.0])
    check = NoveltyInfo(threshold=4.0, false_alarm_rate=0.01)
    assert novelty_warning(5.0, check).startswith("less typical of the training X-rays than 99% of validation X-rays "
                                                  "(novelty 5.00, above 4.00)")
    assert novelty_warning(3.9, check) is None


def test_bundle_keeps_the_check_and_refuses_altered_tensors(tmp_path, cnn, images):
    novelty = fit_novelty(cnn, "cnn", images[:30], images[30:])
    path = tmp_path / "model.pt"
    save_bundle(path, cnn, model_name="cnn", size=SIZE, novelty=novelty)
    loaded = load_bundle(path)
    assert loaded.novelty.threshold == novelty.threshold
    assert torch.equal(loaded.novelty.projection_0, novelty.projection_0)
    assert loaded.metadata["novelty"]["fitted_on_images"] == 30

    # Saved again without the check (new weights), the carried metadata must not claim one.
    save_bundle(tmp_path / "plain.pt", cnn, model_name="cnn", size=SIZE, **carried_metadata(loaded.metadata))
    assert load_bundle(tmp_path / "plain.pt").novelty is None
    assert "novelty" not in load_bundle(tmp_path / "plain.pt").metadata

    # A check fitted on other weights is refused, when saved and when loaded.
    other = create_model("cnn", num_classes=3).eval()
    with pytest.raises(ValueError, match="fitted on other weights"):
        save_bundle(tmp_path / "other.pt", other, model_name="cnn", size=SIZE, novelty=novelty)
    content = torch.load(path, weights_only=True)
    content["state_dict"] = other.state_dict()
    content["metadata"] = json.dumps({**json.loads(content["metadata"]),
                                      "weights_sha256": weights_sha256(other.state_dict())})
    # Edited metadata alone is caught by its hash; here its hash is recomputed, so the novelty check's own
    # record of its weights must catch the swap.
    content["metadata_sha256"] = hashlib.sha256(content["metadata"].encode()).hexdigest()
    torch.save(content, tmp_path / "swapped.pt")
    with pytest.raises(ModelFileError, match="its novelty check was fitted on other weights"):
        load_bundle(tmp_path / "swapped.pt")

    content = torch.load(path, weights_only=True)
    del content["novelty"]
    torch.save(content, tmp_path / "dropped.pt")
    with pytest.raises(ModelFileError, match="describes a novelty check but the file holds none"):
        load_bundle(tmp_path / "dropped.pt")

    content = torch.load(path, weights_only=True)
    content["novelty"]["mean_0"] += 1
    torch.save(content, tmp_path / "altered.pt")
    with pytest.raises(ModelFileError, match="novelty-check tensors do not match"):
        load_bundle(tmp_path / "altered.pt")


def test_onnx_export_computes_the_same_novelty(tmp_path, cnn, images):
    from pneumo.export.onnx import export_onnx
    from pneumo.predict import Predictor

    save_bundle(tmp_path / "model.pt", cnn, model_name="cnn", size=SIZE,
                novelty=fit_novelty(cnn, "cnn", images[:30], images[30:]))
    export_onnx(load_bundle(tmp_path), tmp_path / "model.onnx")
    torch_logits, torch_novelty = Predictor(tmp_path, backend="torch").outputs(images)
    onnx_logits, onnx_novelty = Predictor(tmp_path, backend="onnx").outputs(images)
    np.testing.assert_allclose(onnx_logits, torch_logits, atol=1e-4)
    np.testing.assert_allclose(onnx_novelty, torch_novelty, rtol=1e-3)
    for backend in ("torch", "onnx"):  # an empty batch is no error, and both backends say so alike
        logits, novelty = Predictor(tmp_path, backend=backend).outputs(images[:0])
        assert logits.shape == (0, 3) and novelty.shape == (0,)


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_shipped_models_flag_every_image_that_is_not_an_xray(backend):
    from pneumo.data.readers import resize
    from pneumo.paths import shipped_models
    from pneumo.predict import Predictor

    gallery = not_xray_images()
    for name in shipped_models():
        predictor = Predictor(name, backend=backend)
        assert predictor.novelty_check is not None, f"{name} has no novelty check"
        images = [resize(image, predictor.size) for image in gallery.values()]
        predictions = predictor.predict_images(list(gallery), images)
        # Every one is flagged, and far enough above the threshold to be refused rather than answered.
        unflagged = [p.source for p in predictions if not any(w.startswith("less typical") for w in p.warnings)]
        assert not unflagged, f"{name} ({backend}) did not flag {unflagged}"
        answered = [p.source for p in predictions if scope_refusal(None, p.novelty, predictor.novelty_check) is None]
        assert not answered, f"{name} ({backend}) would answer {answered}"


def test_real_xrays_are_rarely_flagged(shared_data):
    """On internal-test X-rays: images neither the check's fit nor its threshold saw."""
    from pneumo.api import load

    with (REPO / "splits" / "internal.csv").open() as handle:
        unseen = [row["path"] for row in csv.DictReader(handle) if row["role"] == "test"]
    files = [shared_data / path for path in unseen[:40]]
    results = load("pneumo-mobilenet").predict([str(f) for f in files])
    check = load("pneumo-mobilenet").predictor.novelty_check
    flagged = [r.source for r in results if check.flagged(r.novelty)]
    assert len(flagged) <= 2, flagged  # 1% of validation is flagged by design; 2 of 40 would already be unusual


def test_predict_cli_reports_novelty_in_json_and_csv(tmp_path):
    import cv2
    from typer.testing import CliRunner

    from pneumo.cli import app

    noise = tmp_path / "noise.png"
    cv2.imwrite(str(noise), np.random.default_rng(0).integers(0, 256, (300, 300), dtype=np.uint8))
    result = CliRunner().invoke(app, ["predict", str(noise), "--model", "pneumo-mobilenet", "--json"])
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)["predictions"][0]
    assert row["novelty"]["score"] > row["novelty"]["threshold"] and row["novelty"]["flagged"]
    # Noise is far from every X-ray: refused, with no class and no probabilities to mislead.
    assert row["class"] is None and "probabilities" not in row
    assert row["not_classified"].startswith("far from every training X-ray")
    forced = json.loads(CliRunner().invoke(app, ["predict", str(noise), "--model", "pneumo-mobilenet", "--json",
                                                 "--force"]).stdout)["predictions"][0]
    assert forced["class"] and any(w.startswith("less typical of the training X-rays") for w in forced["warnings"])
    result = CliRunner().invoke(app, ["predict", str(noise), "--model", "pneumo-mobilenet", "--csv"])
    (answer,) = csv.DictReader(io.StringIO(result.stdout))
    assert answer["class"] == "not classified" and answer["p_normal"] == ""
    assert float(answer["novelty"]) == pytest.approx(row["novelty"]["score"], abs=1e-3)
    assert float(answer["novelty_threshold"]) == pytest.approx(row["novelty"]["threshold"], abs=1e-3)
    table = CliRunner().invoke(app, ["predict", str(noise), "--model", "pneumo-mobilenet"])
    assert "not classified" in table.output and "far from every training X-ray" in " ".join(table.output.split())


def test_card_describes_the_check(cnn, images, tmp_path):
    from pneumo.card import model_card

    save_bundle(tmp_path / "model.pt", cnn, model_name="cnn", size=SIZE,
                novelty=fit_novelty(cnn, "cnn", images[:30], images[30:]))
    card = model_card(load_bundle(tmp_path).metadata)
    assert "## Novelty check" in card and "Fitted on 30 training images" in card
    save_bundle(tmp_path / "plain.pt", cnn, model_name="cnn", size=SIZE)
    assert "- This model has none (none was fitted; `pneumo calibrate` fits one" in model_card(
        load_bundle(tmp_path / "plain.pt").metadata)


def test_shipped_ensemble_gets_the_same_novelty_from_torch_and_onnx():
    from pneumo.predict import Predictor

    images = np.stack([xray_like(seed, 224) for seed in range(4)])
    torch_logits, torch_novelty = Predictor("pneumo-ensemble", backend="torch").outputs(images)
    onnx_logits, onnx_novelty = Predictor("pneumo-ensemble", backend="onnx").outputs(images)
    np.testing.assert_allclose(onnx_logits, torch_logits, atol=1e-4)
    np.testing.assert_allclose(onnx_novelty, torch_novelty, rtol=1e-4)
