"""The shortcut audit on synthetic archives: a planted acquisition shortcut must be found, its absence not."""

import json

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from pneumo.cli import app
from pneumo.data.audit import audit, image_statistics, jpeg_quality
from tests.conftest import jpeg_bytes, xray_like

runner = CliRunner()


def archive(root, *, blur_pneumonia: bool, patients: int = 30):
    """Two images per patient; with ``blur_pneumonia`` the pneumonia images are blurred (the planted shortcut)."""
    for folder, name, offset in (("NORMAL", "IM-{p:04d}-{i:04d}.jpeg", 0),
                                 ("PNEUMONIA", "person{p}_bacteria_{i}.jpeg", 1000),
                                 ("PNEUMONIA", "person{p}_virus_{i}.jpeg", 2000)):
        target = root / "train" / folder
        target.mkdir(parents=True, exist_ok=True)
        for i in range(patients * 2):
            image = xray_like(offset + i, 128)
            if blur_pneumonia and folder == "PNEUMONIA":
                image = cv2.GaussianBlur(image, (0, 0), 1.5)
            (target / name.format(p=offset + i // 2, i=i)).write_bytes(jpeg_bytes(image))
    return root


def test_a_planted_sharpness_shortcut_is_found(tmp_path):
    result = audit(archive(tmp_path, blur_pneumonia=True), resamples=100)
    probe = result.probe["normal_vs_pneumonia"]
    assert probe["auc"] > 0.95 and probe["auc_ci95"][0] > 0.9
    assert {"sharpness", "noise"} & set(list(probe["single_feature_auc"])[:2])
    assert result.groups["train/normal"]["sharpness"]["mean"] > 2 * result.groups["train/bacterial"]["sharpness"]["mean"]


def test_no_shortcut_no_finding(tmp_path):
    result = audit(archive(tmp_path, blur_pneumonia=False), resamples=100)
    for task in ("normal_vs_pneumonia", "bacterial_vs_viral"):
        probe = result.probe[task]
        assert probe["auc"] < 0.75 and probe["auc_ci95"][0] < 0.6, probe  # chance is 0.5


def test_statistics_measure_what_they_say():
    flat = np.full((128, 128), 100, np.uint8)
    stats = image_statistics(flat)
    assert stats["sharpness"] == 0 and stats["noise"] == 0 and stats["contrast"] == 0 and stats["mean"] == 100
    framed = flat.copy()
    framed[:, :12] = framed[:, -12:] = 0
    assert image_statistics(framed)["border"] > 20  # a dark frame shows as border darkness
    noisy = np.clip(100 + np.random.default_rng(0).normal(0, 10, (224, 224)), 0, 255).astype(np.uint8)
    assert image_statistics(noisy)["noise"] == pytest.approx(10, rel=0.15)


@pytest.mark.parametrize("quality", [30, 75, 95])
def test_jpeg_quality_is_read_back_from_the_quantization_table(quality):
    data = cv2.imencode(".jpg", xray_like(1, 64), [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()
    assert jpeg_quality(data) == quality
    assert np.isnan(jpeg_quality(cv2.imencode(".png", xray_like(1, 64))[1].tobytes()))


def test_audit_command_writes_json_markdown_figure_and_reports_bad_files(tmp_path):
    data = archive(tmp_path / "data", blur_pneumonia=True, patients=10)
    (data / "train" / "NORMAL" / "IM-9999-0001.jpeg").write_bytes(b"broken")
    result = runner.invoke(app, ["audit", str(data), "--out", str(tmp_path / "out"), "--resamples", "50"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert summary["images"] == 60 and summary["probe"]["normal_vs_pneumonia"]["auc"] > 0.9
    assert "IM-9999-0001.jpeg" in " ".join(result.output.split())
    assert "| normal vs pneumonia |" in (tmp_path / "out" / "audit.md").read_text()
    assert (tmp_path / "out" / "audit.png").stat().st_size > 10_000
    missing = runner.invoke(app, ["audit", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "no such data folder" in missing.output
