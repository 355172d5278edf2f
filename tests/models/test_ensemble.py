"""Ensembles: the averaging module checked by hand, the bundle and ONNX round trip, and the command end to end."""

import json

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from pneumo.cli import app
from pneumo.errors import ModelFileError
from pneumo.evaluation.stress import BATTERY
from pneumo.export.onnx import export_onnx
from pneumo.models import create_model
from pneumo.models.bundle import carried_metadata, load_bundle, save_bundle
from pneumo.models.ensemble import ENSEMBLE_NAME, Ensemble, area_resize_matrix, ensemble_from_bundles
from pneumo.predict import Predictor
from tests.evaluation.test_commands import small_split

runner = CliRunner()


@pytest.mark.parametrize("target", [128, 100, 64])
def test_area_resize_matrix_is_opencv_inter_area(target):
    image = np.random.default_rng(0).random((224, 224)).astype(np.float32)
    matrix = area_resize_matrix(224, target)
    expected = cv2.resize(image, (target, target), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(matrix @ image @ matrix.T, expected, atol=1e-5)


def test_area_resize_matrix_refuses_to_enlarge():
    with pytest.raises(ValueError, match="'target' size must be in 1..64"):
        area_resize_matrix(64, 96)


def random_members(seed: int = 0):
    torch.manual_seed(seed)
    return [create_model("cnn").eval(), create_model("cnn").eval()]


def test_ensemble_is_the_mean_of_temperature_scaled_member_probabilities():
    """Computed by hand: each member on its own OpenCV INTER_AREA resize, softmax(logits / T), averaged."""
    members = random_members()
    ensemble = Ensemble(members, names=["cnn", "cnn"], sizes=[64, 48], temperatures=[2.0, 0.5]).eval()
    images = np.random.default_rng(1).random((3, 64, 64)).astype(np.float32)
    expected = []
    for member, size, temperature in zip(members, (64, 48), (2.0, 0.5)):
        resized = np.stack([cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA) for image in images])
        with torch.no_grad():
            logits = member(torch.from_numpy(resized)[:, None]).numpy()
        expected.append(torch.softmax(torch.from_numpy(logits) / temperature, 1).numpy())
    with torch.no_grad():
        got = torch.softmax(ensemble(torch.from_numpy(images)[:, None]), 1).numpy()
    np.testing.assert_allclose(got, np.mean(expected, axis=0), atol=1e-5)


def test_ensemble_needs_a_size_and_temperature_per_member():
    with pytest.raises(ValueError, match="one name, size and temperature per member; got 2 members, 2 names, 1 sizes"):
        Ensemble(random_members(), names=["cnn", "cnn"], sizes=[64], temperatures=[1.0, 1.0])


def member_bundles(tmp_path):
    """Two saved member bundles at 128 and 64 px, trained (here: initialised) on the same split."""
    paths = []
    for index, (member, size) in enumerate(zip(random_members(), (128, 64))):
        path = tmp_path / f"member{index}" / "model.pt"
        save_bundle(path, member, model_name="cnn", size=size, id=f"member{index}", temperature=1.5,
                    training={"split": "file:internal.csv", "val_images": 10, "config": {"seed": index}})
        paths.append(path)
    return [load_bundle(p) for p in paths]


def test_ensemble_bundle_and_onnx_round_trip(tmp_path):
    ensemble, metadata = ensemble_from_bundles(member_bundles(tmp_path))
    path = tmp_path / "ensemble" / "model.pt"
    save_bundle(path, ensemble, model_name=ENSEMBLE_NAME, size=ensemble.size, id="both", **metadata)
    loaded = load_bundle(path)
    assert loaded.size == 128 and [m["size"] for m in loaded.metadata["ensemble"]["members"]] == [128, 64]
    images = np.random.default_rng(2).integers(0, 256, (4, 128, 128), dtype=np.uint8)
    torch_probs = Predictor(path).probabilities(images)
    export_onnx(loaded, path.with_suffix(".onnx"))
    onnx_probs = Predictor(path.parent, backend="onnx").probabilities(images)
    np.testing.assert_allclose(torch_probs, onnx_probs, atol=1e-4)
    with torch.no_grad():
        original = torch.softmax(ensemble.eval()(torch.from_numpy(images).float()[:, None] / 255), 1).numpy()
    np.testing.assert_allclose(torch_probs, original, atol=1e-5)


def test_members_must_share_their_split_and_be_two_or_more(tmp_path):
    first, second = member_bundles(tmp_path)
    with pytest.raises(ModelFileError, match="at least two member models; got 1"):
        ensemble_from_bundles([first])
    other = tmp_path / "other" / "model.pt"
    save_bundle(other, second.model, model_name="cnn", size=64,
                **dict(carried_metadata(second.metadata), training={"split": "made by pneumo (seed 7)"}))
    with pytest.raises(ModelFileError, match="members must share their training split"):
        ensemble_from_bundles([first, load_bundle(other)])
    # The same method but another split seed: another split.
    reseeded = tmp_path / "reseeded" / "model.pt"
    save_bundle(reseeded, second.model, model_name="cnn", size=64, **dict(
        carried_metadata(second.metadata), training={"split": "file:internal.csv", "config": {"split_seed": 7}}))
    with pytest.raises(ModelFileError, match="members must share their training split"):
        ensemble_from_bundles([first, load_bundle(reseeded)])


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def test_ensemble_command_works_wherever_a_model_works(tiny_run, tiny_run_b, shared_data, cache_dir, shared_images,
                                                       tmp_path):
    """Members of two architectures and sizes (128 and 96 px) -> one bundle that predicts, explains and evaluates."""
    smaller = tmp_path / "mnv3-96" / "model.pt"
    source = load_bundle(tiny_run_b)
    save_bundle(smaller, source.model, model_name="mobilenet_v3_small", size=96, **carried_metadata(source.metadata))
    split = small_split(tiny_run, tmp_path, per_role=40)
    out = tmp_path / "ensemble"
    printed = invoke("ensemble", tiny_run, smaller, "--out", out, "--name", "tiny-ensemble", "--data", shared_data,
                     "--split-file", split, "--cache-dir", cache_dir)
    assert "tiny-ensemble: 2 members at 128 px" in printed
    assert {p.name for p in out.iterdir()} == {"model.pt", "model.onnx", "MODEL_CARD.md"}
    card = (out / "MODEL_CARD.md").read_text()
    assert "`ensemble` of 2 models" in card and "| 96 px |" in card and "operating point" in card.lower()

    torch_predictor, onnx_predictor = Predictor(out), Predictor(out, backend="onnx")
    files = [str(p) for p in shared_images]
    torch_answers, onnx_answers = torch_predictor.predict_files(files), onnx_predictor.predict_files(files)
    for a, b in zip(torch_answers, onnx_answers):
        assert a.label == b.label and a.probabilities == pytest.approx(b.probabilities, abs=1e-4)
    averaged, second = torch_predictor.explain(torch_answers[:2]), torch_predictor.explain(torch_answers[:2], member=1)
    # The same picture size below the caption (which names the member, so may wrap differently), other heatmaps.
    assert averaged[0].shape[1:] == second[0].shape[1:]
    assert not np.array_equal(averaged[0][-400:], second[0][-400:])
    with pytest.raises(ValueError, match=r"'member' \(--cam-member\) must be in 0..1. Got 2 instead"):
        torch_predictor.explain(torch_answers[:1], member=2)

    invoke("evaluate", "--model", out, "--data", shared_data, "--cache-dir", cache_dir, "--split-file", split, "--out",
           tmp_path / "eval", "--resamples", 50, "--stress")
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["model_name"] == ENSEMBLE_NAME
    assert [row["name"] for row in metrics["stress"]["perturbations"]] == [p.name for p in BATTERY]

    refused = runner.invoke(app, ["ensemble", str(tiny_run), str(smaller), "--out", str(out), "--data", str(shared_data)])
    assert refused.exit_code == 2 and "already exists and is not empty" in refused.output


@pytest.mark.parametrize("scale", [0.85, 1.0, 1.2])
def test_zoom_matrix_is_the_stress_batterys_zoom(scale):
    from pneumo.data.acquisition import affine
    from pneumo.models.ensemble import zoom_matrix

    images = torch.rand(2, 1, 48, 48)
    matrix = torch.from_numpy(zoom_matrix(48, scale))
    np.testing.assert_allclose((matrix @ images @ matrix.T).numpy(), affine(images, scale=scale).numpy(), atol=1e-5)


def test_test_time_views_are_averaged_and_exported(tmp_path):
    """Views (1.0, 0.9): the mean over views of the plain ensemble on zoomed copies, the same in ONNX."""
    from pneumo.data.acquisition import affine

    bundles = member_bundles(tmp_path)
    plain, _ = ensemble_from_bundles(bundles)
    viewed, metadata = ensemble_from_bundles(bundles, views=(1.0, 0.9))
    assert metadata["ensemble"]["views"] == [1.0, 0.9]
    images = torch.rand(3, 1, 128, 128)
    with torch.no_grad():
        expected = (torch.softmax(plain.eval()(images), 1) + torch.softmax(plain(affine(images, scale=0.9)), 1)) / 2
        got = torch.softmax(viewed.eval()(images), 1)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-5)
    path = tmp_path / "viewed" / "model.pt"
    save_bundle(path, viewed, model_name=ENSEMBLE_NAME, size=viewed.size, id="viewed", **metadata)
    export_onnx(load_bundle(path), path.with_suffix(".onnx"))
    uint8 = (images[:, 0] * 255).round().byte().numpy()
    np.testing.assert_allclose(Predictor(path).probabilities(uint8), Predictor(path.parent, backend="onnx").probabilities(uint8),
                               atol=1e-4)
