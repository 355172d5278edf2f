"""BatchNorm adaptation (AdaBN): the function on a model trained here, and `pneumo adapt` end to end."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from pneumo.inference.adaptation import MIN_IMAGES, adapt_batchnorm
from pneumo.cli import app
from pneumo.errors import PneumoError
from pneumo.inference import predict_logits, softmax
from pneumo.models.bundle import load_bundle
from pneumo.predict import load_images
from tests.conftest import REPO, jpeg_bytes, xray_like

runner = CliRunner()


def stripes(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class 0: horizontal stripes, class 1: vertical, random phase and period, plus noise (uint8, 32 px)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, count)
    grid = np.arange(32)
    images = []
    for label in labels:
        period, phase = rng.uniform(4, 8), rng.uniform(0, 6.3)
        wave = np.sin(2 * np.pi * grid / period + phase)
        pattern = wave[:, None].repeat(32, 1) if label == 0 else wave[None, :].repeat(32, 0)
        images.append(np.clip(128 + 60 * pattern + rng.normal(0, 15, (32, 32)), 0, 255))
    return np.asarray(images, np.uint8), labels


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))

    def forward(self, x):
        return self.body(x)


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, np.ndarray, np.ndarray]:
    torch.manual_seed(0)
    images, labels = stripes(512, seed=0)
    model = TinyNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    x, y = torch.from_numpy(images).float()[:, None] / 255, torch.from_numpy(labels)
    for _ in range(4):
        for start in range(0, 512, 64):
            loss = nn.functional.cross_entropy(model(x[start:start + 64]), y[start:start + 64])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    test_images, test_labels = stripes(256, seed=1)
    return model.eval(), test_images, test_labels


def accuracy(model, images, labels) -> float:
    return float((predict_logits(model, images).argmax(1) == labels).mean())


def test_adaptation_undoes_an_acquisition_shift_and_leaves_unshifted_images_alone(trained):
    model, images, labels = trained
    clean = accuracy(model, images, labels)
    assert clean > 0.95
    # Another 'scanner': a third of the contrast and a brighter background.
    shifted = np.clip(images.astype(np.float32) * 0.35 + 150, 0, 255).astype(np.uint8)
    unadapted = accuracy(model, shifted, labels)
    adapted = accuracy(adapt_batchnorm(model, shifted), shifted, labels)
    assert unadapted < 0.8 and adapted > 0.95, (unadapted, adapted)
    assert abs(accuracy(adapt_batchnorm(model, images), images, labels) - clean) <= 0.02


def test_adaptation_changes_only_the_statistics_of_a_copy(trained):
    model, images, _ = trained
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    adapted = adapt_batchnorm(model, np.clip(images.astype(np.int32) + 60, 0, 255).astype(np.uint8))
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, before[name])  # the source model is untouched
    changed = {name for name, tensor in adapted.state_dict().items() if not torch.equal(tensor, before[name])}
    assert changed and all(name.endswith(("running_mean", "running_var", "num_batches_tracked")) for name in changed)
    assert not adapted.training and all(layer.momentum == 0.1 for layer in adapted.modules()
                                        if isinstance(layer, nn.BatchNorm2d))


def test_too_few_images_and_models_without_batchnorm_are_refused(trained):
    model, images, _ = trained
    with pytest.raises(PneumoError, match=f"at least {MIN_IMAGES} images of the site; got {MIN_IMAGES - 1}"):
        adapt_batchnorm(model, images[:MIN_IMAGES - 1])
    plain = nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(PneumoError, match="has no BatchNorm layers"):
        adapt_batchnorm(plain, images)


def site_folder(tmp_path, count: int, offset: int = 40):
    folder = tmp_path / "site"
    folder.mkdir()
    for number in range(count):
        image = np.clip(xray_like(number, 128).astype(np.int32) + offset, 0, 255).astype(np.uint8)
        (folder / f"case{number:03d}.jpeg").write_bytes(jpeg_bytes(image))
    return folder


def test_adapt_command_writes_a_bundle_onnx_and_card_that_record_the_adaptation(tmp_path):
    source = REPO / "models" / "pneumo-cnn"
    folder = site_folder(tmp_path, 24)
    (folder / "broken.jpeg").write_bytes(b"not an image")
    out = tmp_path / "adapted"
    result = runner.invoke(app, ["adapt", "--model", str(source), str(folder), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "skipped:" in result.output and "broken.jpeg" in result.output
    adapted, original = load_bundle(out), load_bundle(source)
    record = adapted.metadata["adaptation"]
    assert record["images"] == 24 and record["source"]["bundle_sha256"] == original.file_sha256
    assert adapted.model_id == "pneumo-cnn-adapted" and adapted.temperature == original.temperature
    stats = [name for name in adapted.model.state_dict() if name.endswith("running_mean")]
    assert any(not torch.equal(adapted.model.state_dict()[n], original.model.state_dict()[n]) for n in stats)
    assert "## Site adaptation" in (out / "MODEL_CARD.md").read_text()
    # The source's novelty check described other features: the adapted model carries none, and says why.
    assert original.novelty is not None and adapted.novelty is None and "novelty" not in adapted.metadata
    assert "This model has none (not carried: the source model's novelty check" in (out / "MODEL_CARD.md").read_text()
    predicted = runner.invoke(app, ["predict", "--model", str(out), "--backend", "onnx", "--json",
                                    str(folder / "case000.jpeg")])
    assert predicted.exit_code == 0, predicted.output
    assert json.loads(predicted.stdout)["model"] == "pneumo-cnn-adapted"
    again = runner.invoke(app, ["adapt", "--model", str(source), str(folder), "--out", str(out)])
    assert again.exit_code == 2 and "already exists and is not empty" in again.output


def _site_labels(tmp_path, count: int) -> Path:
    labels = tmp_path / "labels.csv"
    with labels.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "class", "patient"])
        for number in range(count):
            writer.writerow([f"site/case{number:03d}.jpeg", ["NORMAL", "bacterial", "viral"][number % 3],
                             f"child{number // 2}"])
    return labels


def test_adapt_refuses_too_few_images_for_adabn(tmp_path):
    folder = site_folder(tmp_path, 24)
    few = runner.invoke(app, ["adapt", "--model", str(REPO / "models" / "pneumo-cnn"), str(folder / "case00*.jpeg"),
                              "--out", str(tmp_path / "few")])
    assert few.exit_code == 2 and f"at least {MIN_IMAGES} images" in few.output


def test_site_calibration_refuses_a_guarantee_it_cannot_give_and_says_how_many_labels_it_needs(tmp_path):
    source = REPO / "models" / "pneumo-cnn"
    site_folder(tmp_path, 24)
    labels = _site_labels(tmp_path, 24)  # 16 pneumonia images of 12 children: too few for 0.97
    refused = runner.invoke(app, ["adapt", "--model", str(source), "--labels", str(labels), "--out", str(tmp_path / "no")])
    output = " ".join(refused.output.split())
    assert refused.exit_code == 2, output
    assert "a conformal cut-off for sensitivity 0.97 needs at least 33 labelled patients with pneumonia; got 12" in output
    assert not (tmp_path / "no").exists()
    kept = runner.invoke(app, ["adapt", "--model", str(source), "--labels", str(labels), "--out", str(tmp_path / "kept"),
                               "--keep-operating-point"])
    assert kept.exit_code == 0, kept.output
    assert load_bundle(tmp_path / "kept").info.operating_point.threshold == load_bundle(source).info.operating_point.threshold


def test_site_calibration_writes_the_cut_off_with_its_guarantee_and_site(tmp_path):
    source = REPO / "models" / "pneumo-cnn"
    folder = site_folder(tmp_path, 30)
    labels = _site_labels(tmp_path, 30)
    out = tmp_path / "site-a"
    result = runner.invoke(app, ["adapt", "--model", str(source), "--labels", str(labels), "--out", str(out), "--target", "0.9"])
    assert result.exit_code == 0, result.output
    site = load_bundle(out)
    point = site.metadata["operating_point"]
    # 20 pneumonia images of 15 children: each child counts once, by its lowest score; floor(16 * 0.1) = 1, so the
    # cut-off is the lowest of the fifteen.
    guarantee = site.metadata["site_calibration"]["guarantee"]
    assert (guarantee["kind"], guarantee["positives"], guarantee["misses_allowed"]) == ("conformal", 15, 0)
    probs = site_probabilities(site, folder, 30)
    sick = np.arange(30) % 3 != 0
    assert point["pneumonia_threshold"] == pytest.approx((1 - probs[sick, 0]).min(), abs=1e-6)
    assert site.metadata["site_calibration"]["name"] == "site-a" and site.novelty is not None  # weights unchanged
    assert "fitted on 30 labelled images of site site-a" in site.info.operating_point.source
    assert site.info.conformal_scores is not None and len(site.info.conformal_scores[0]) == 10
    card = (out / "MODEL_CARD.md").read_text()
    assert "## Site calibration" in card and "site-a" in card
    predicted = runner.invoke(app, ["predict", "--model", str(out), "--json", str(folder / "case001.jpeg")])
    assert "fitted on 30 labelled images of site site-a" in json.loads(predicted.stdout)["decision_rule"]
    bad = tmp_path / "bad.csv"
    bad.write_text("path,class\nsite/case000.jpeg,pneumonia\n")
    refused = runner.invoke(app, ["adapt", "--model", str(source), "--out", str(tmp_path / "bad"), "--labels", str(bad)])
    assert refused.exit_code == 2 and "bad.csv, line 2: unknown class 'pneumonia'" in " ".join(refused.output.split())


def site_probabilities(bundle, folder, count):
    loaded, _ = load_images([str(folder / f"case{n:03d}.jpeg") for n in range(count)], bundle.size)
    return softmax(predict_logits(bundle.model, np.stack([image for _, image, _ in loaded])), bundle.temperature)


def test_predict_adapts_a_batch_under_either_backend_and_says_torch_answered(tmp_path):
    """BatchNorm statistics exist only in the PyTorch model: under --backend onnx the adapted answers come from it
    too, and the JSON says so rather than claim ONNX Runtime answered."""
    folder = site_folder(tmp_path, 20)
    outputs = {}
    for backend in ("torch", "onnx"):
        result = runner.invoke(app, ["predict", "--model", str(REPO / "models" / "pneumo-cnn"), "--backend", backend,
                                     "--adapt", "bn", "--json", "--force", str(folder)])
        assert result.exit_code == 0, result.output
        outputs[backend] = json.loads(result.stdout)
    assert outputs["torch"]["adapt"] == "bn" and outputs["onnx"]["backend"] == outputs["torch"]["backend"] == "torch"
    torch_probs = [row["probabilities"]["normal"] for row in outputs["torch"]["predictions"]]
    onnx_probs = [row["probabilities"]["normal"] for row in outputs["onnx"]["predictions"]]
    np.testing.assert_allclose(torch_probs, onnx_probs, atol=1e-5)
    replaced = runner.invoke(app, ["predict", "--adapt-priors", str(folder)])
    assert replaced.exit_code == 2 and "--adapt-priors is now --adapt priors" in replaced.output


def test_site_calibration_with_adabn_first_reports_the_images_it_shared(tmp_path):
    source = REPO / "models" / "pneumo-cnn"
    folder = site_folder(tmp_path, 30)
    labels = _site_labels(tmp_path, 30)
    out = tmp_path / "site-bn"
    result = runner.invoke(app, ["adapt", "--model", str(source), str(folder), "--labels", str(labels), "--out", str(out),
                                 "--method", "bn", "--target", "0.9", "--guarantee", "conformal"])
    assert result.exit_code == 0, result.output
    assert "BatchNorm statistics re-estimated on 30 images, 30 of them also labelled" in " ".join(result.output.split())
    site = load_bundle(out)
    assert site.metadata["adaptation"]["also_labelled"] == 30 and site.novelty is None  # features changed
    assert site.metadata["site_calibration"]["method"] == "bn"
    stats = [name for name in site.model.state_dict() if name.endswith("running_mean")]
    original = load_bundle(source)
    assert any(not torch.equal(site.model.state_dict()[n], original.model.state_dict()[n]) for n in stats)
