"""Every command, end to end, on a synthetic archive made here: these run without the shared data.

The synthetic images carry no pneumonia; these tests check that each command path works and
writes what it promises, not what the models learn (the integration tests, on the real training
split, do that).
"""

import hashlib
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from pneumo.cli import app
from pneumo.evaluation.stress import BATTERY
from tests.conftest import write_archive

runner = CliRunner()
SIZE = "64"


def invoke(*args, code: int = 0) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return " ".join(result.output.split())


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A synthetic archive (train and test folders) and two tiny runs trained on it at 64 px."""
    root = tmp_path_factory.mktemp("synthetic")
    archive = write_archive(root / "archive", normal=24, bacteria=24, virus=24)
    write_archive(root / "archive", normal=8, bacteria=8, virus=8, split="test", first=100)
    cache = root / "cache"
    for name, model in (("one", "cnn"), ("two", "mobilenet_v3_small")):
        invoke("train", "--model", model, "--epochs", "1", "--size", SIZE, "--data", archive, "--cache-dir", cache,
               "--runs-dir", root / "runs", "--name", name, "--accelerator", "cpu", "--quiet")
    return {"root": root, "data": archive, "cache": cache, "runs": [root / "runs" / "one", root / "runs" / "two"]}


def test_organize_prepare_show_data_and_audit(synthetic, tmp_path):
    invoke("organize", synthetic["data"], tmp_path / "organized")
    assert (tmp_path / "organized" / "manifest.csv").is_file()
    printed = invoke("prepare", "--data", tmp_path / "organized", "--cache-dir", tmp_path / "cache", "--size", SIZE)
    assert "patient" in printed.lower()
    invoke("show-data", "--data", synthetic["data"], "--cache-dir", synthetic["cache"], "--size", SIZE,
           "--out", tmp_path / "data.png")
    invoke("show-augment", "--data", synthetic["data"], "--cache-dir", synthetic["cache"], "--size", SIZE,
           "--out", tmp_path / "augment.png", "--blur", "1.0", "--jpeg", "40")
    assert (tmp_path / "data.png").stat().st_size > 1000 and (tmp_path / "augment.png").stat().st_size > 1000
    invoke("audit", synthetic["data"], "--out", tmp_path / "audit", "--resamples", "20")
    assert (tmp_path / "audit" / "audit.json").is_file()


def test_evaluate_compare_report_and_card(synthetic, tmp_path):
    one, two = synthetic["runs"]
    common = ["--data", synthetic["data"], "--cache-dir", synthetic["cache"], "--resamples", "20"]
    invoke("evaluate", "--model", one, *common, "--out", tmp_path / "eval", "--stress")
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["images"] == 24  # the archive's test/ folder
    assert [row["name"] for row in metrics["stress"]["perturbations"]] == [p.name for p in BATTERY]
    invoke("compare", one, two, *common, "--out", tmp_path / "compare")
    assert (tmp_path / "compare" / "comparison.json").is_file()
    invoke("report", one, two, *common, "--out", tmp_path / "report.html")
    assert "Summary" in (tmp_path / "report.html").read_text()
    invoke("card", "--model", one, "--metrics", tmp_path / "eval" / "metrics.json", "--out", tmp_path / "CARD.md")
    assert "## Limitations" in (tmp_path / "CARD.md").read_text()


def test_calibrate_export_predict_adapt_and_ensemble(synthetic, tmp_path):
    import shutil

    one, two = (shutil.copytree(run, tmp_path / run.name) for run in synthetic["runs"])
    common = ["--data", synthetic["data"], "--cache-dir", synthetic["cache"]]
    assert "operating point" in invoke("calibrate", "--model", one, *common, "--no-stress")
    invoke("export", "--model", one)
    images = sorted((synthetic["data"] / "test").rglob("*.jpeg"))
    answer = json.loads(runner.invoke(app, ["predict", "--model", str(one), "--backend", "onnx", "--json",
                                            *map(str, images[:3])]).stdout)
    assert len(answer["predictions"]) == 3 and answer["decision_rule"]
    invoke("adapt", "--model", one, synthetic["data"] / "train", "--out", tmp_path / "adapted")
    assert (tmp_path / "adapted" / "model.onnx").is_file()
    invoke("ensemble", one, two, "--out", tmp_path / "ensemble", *common, "--split-file", one / "split.csv")
    answer = json.loads(runner.invoke(app, ["predict", "--model", str(tmp_path / "ensemble"), "--json",
                                            str(images[0])]).stdout)
    assert answer["model"] == "pneumo-ensemble-2"


def test_export_quantize_int8_writes_a_checked_file_that_predict_uses_only_when_named(synthetic, tmp_path):
    import shutil

    from pneumo.predict import Predictor

    two = shutil.copytree(synthetic["runs"][1], tmp_path / "two")  # MobileNetV3: depthwise layers stay in float
    invoke("export", "--model", two)  # the float export, which the auto backend answers with
    printed = invoke("export", "--model", two, "--quantize", "int8", "--data", synthetic["data"],
                     "--cache-dir", synthetic["cache"])
    written = two / "model-int8.onnx"
    assert written.is_file() and "decisions changed" in printed and "not used unless named" in printed
    assert Predictor(written, backend="onnx").metadata["quantization"]["check"]["images"] > 0
    images = sorted((synthetic["data"] / "test").rglob("*.jpeg"))[:2]
    quantized = json.loads(runner.invoke(app, ["predict", "--model", str(written), "--json", *map(str, images)]).stdout)
    assert len(quantized["predictions"]) == 2 and quantized["backend"] == "onnx"
    assert quantized["model_sha256"] == hashlib.sha256(written.read_bytes()).hexdigest()
    # Beside the run's bundle and its float export, the INT8 file is not what answers unless named.
    plain = json.loads(runner.invoke(app, ["predict", "--model", str(two), "--json", str(images[0])]).stdout)
    assert plain["backend"] == "onnx"
    assert plain["model_sha256"] == hashlib.sha256((two / "model.onnx").read_bytes()).hexdigest()


def test_a_teachers_labels_file_teaches_without_its_weights(synthetic, tmp_path):
    from pneumo.card import model_card
    from pneumo.data.cache import prepare_folder
    from pneumo.models.bundle import load_bundle
    from pneumo.training.distill import teacher_probabilities, write_teacher_labels

    teacher = load_bundle(synthetic["runs"][0])
    prepared = prepare_folder(synthetic["data"], size=int(SIZE), cache_dir=synthetic["cache"]).data
    probabilities, described = teacher_probabilities(synthetic["runs"][0], prepared, np.arange(len(prepared.labels)),
                                                     data_path=synthetic["data"], cache_dir=synthetic["cache"])
    labels_file = tmp_path / "teacher.npz"
    write_teacher_labels(labels_file, probabilities, prepared.sha256, described)
    invoke("train", "--model", "cnn", "--epochs", "1", "--size", SIZE, "--data", synthetic["data"], "--cache-dir",
           tmp_path / "own-cache", "--runs-dir", tmp_path / "runs", "--name", "student", "--accelerator", "cpu",
           "--quiet", "--teacher", labels_file)
    student = load_bundle(tmp_path / "runs" / "student")
    taught = student.info.training["teacher"]
    assert (taught["id"], taught["weights_sha256"]) == (teacher.model_id, teacher.metadata["weights_sha256"])
    assert taught["labels_sha256"] == hashlib.sha256(labels_file.read_bytes()).hexdigest()
    assert not (tmp_path / "own-cache" / "teacher").exists()  # nothing was labelled again
    assert "read from its labels file `teacher.npz`" in model_card(student.metadata)


def test_distillation_conformal_sets_and_guaranteed_cut_offs(synthetic, tmp_path):
    import shutil

    from pneumo.card import model_card
    from pneumo.models.bundle import load_bundle

    one = shutil.copytree(synthetic["runs"][0], tmp_path / "one")
    common = ["--data", synthetic["data"], "--cache-dir", synthetic["cache"]]
    # A student of the first run: its soft labels are cached once, and the run records its teacher.
    invoke("train", "--model", "cnn", "--epochs", "1", "--size", SIZE, *common, "--runs-dir", tmp_path / "runs",
           "--name", "student", "--accelerator", "cpu", "--quiet", "--teacher", one, "--distill-weight", "0.5")
    student = load_bundle(tmp_path / "runs" / "student")
    assert student.info.training["teacher"]["weights_sha256"] == load_bundle(one).metadata["weights_sha256"]
    assert list((synthetic["cache"] / "teacher").glob("*.npy"))
    assert f"- Distilled from `{load_bundle(one).model_id}`" in model_card(student.metadata)
    assert "x cross-entropy with the labels + 0.5 x T^2 x KL divergence" in model_card(student.metadata)
    # Calibration fits conformal scores; evaluate and predict give sets.
    invoke("calibrate", "--model", one, *common, "--no-stress")
    invoke("evaluate", "--model", one, *common, "--resamples", "20", "--conformal", "0.1", "--out", tmp_path / "eval")
    sets = json.loads((tmp_path / "eval" / "metrics.json").read_text())["conformal"]
    assert sets["alpha"] == 0.1 and 0 <= sets["coverage"] <= 1 and 1 <= sets["mean_size"] <= 3
    image = sorted((synthetic["data"] / "test").rglob("*.jpeg"))[0]
    row = json.loads(runner.invoke(app, ["predict", "--model", str(one), "--json", "--conformal", "0.1",
                                         str(image)]).stdout)["predictions"][0]
    assert set(row["class_set"]) <= {"normal", "bacterial", "viral"} and row["class_set_text"]
    # A few validation patients cannot support a guaranteed cut-off at 0.97: refused, with the number needed.
    refused = invoke("calibrate", "--model", one, *common, "--no-stress", "--guarantee", "conformal", code=2)
    assert "needs at least 33 labelled patients with pneumonia" in refused


def test_serve_answers_on_the_synthetic_model(synthetic):
    from fastapi.testclient import TestClient

    from pneumo.serving.app import create_app

    image = sorted((synthetic["data"] / "test").rglob("*.jpeg"))[0].read_bytes()
    client = TestClient(create_app(synthetic["runs"][0]))
    response = client.post("/v1/predict?gradcam=true", files={"file": ("x.jpeg", image)})
    assert response.status_code == 200 and response.json()["gradcam_png"]


def test_the_epoch_study(synthetic, tmp_path):
    invoke("experiment", "epochs", "--epochs", "1", "--epochs", "2", "--seeds", "1", "--data", synthetic["data"],
           "--cache-dir", synthetic["cache"], "--root", tmp_path / "epochs", "--accelerator", "cpu", "--resamples",
           "20", "--config", _tiny_config(tmp_path))
    summary = json.loads(next((tmp_path / "epochs").rglob("summary.json")).read_text())
    assert [row["epochs"] for row in summary["rows"]] == [1, 2]


def _tiny_config(folder):
    path = folder / "tiny.yaml"
    path.write_text(f"model: cnn\nsize: {SIZE}\n")
    return path
