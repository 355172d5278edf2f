"""predict and export, on a tiny model trained on real images."""

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pneumo.cli import app
from pneumo.predict import Predictor, expand_inputs, find_inputs

runner = CliRunner()


@pytest.fixture(scope="module")
def exported(tiny_run):
    result = runner.invoke(app, ["export", "--model", str(tiny_run), "--format", "onnx"])
    assert result.exit_code == 0, result.output
    return tiny_run / "model.onnx"


def test_onnx_and_torch_agree_on_real_images(tiny_run, exported, shared_images):
    files = [str(p) for p in shared_images]
    torch_probs = np.array([list(p.probabilities.values()) for p in Predictor(tiny_run).predict_files(files)])
    onnx_probs = np.array([list(p.probabilities.values())
                           for p in Predictor(tiny_run, backend="onnx").predict_files(files)])
    assert np.abs(torch_probs - onnx_probs).max() < 1e-4


def test_onnx_file_carries_the_metadata(tiny_run, exported):
    predictor = Predictor(exported, backend="onnx")
    assert predictor.classes == ["NORMAL", "Bacterial Pneumonia", "Viral Pneumonia"]
    assert predictor.size == 128 and predictor.model_id == "cnn-tiny-cnn"


def test_predict_json_with_bad_file_and_gradcam(tiny_run, shared_images, tmp_path):
    bad = tmp_path / "broken.jpeg"
    bad.write_text("not an image")
    args = ["predict", "--model", str(tiny_run), "--json", "--gradcam", str(tmp_path / "cam"),
            str(shared_images[0]), str(bad), str(shared_images[-1])]
    result = runner.invoke(app, args)
    assert result.exit_code == 1  # one file failed
    answer = json.loads(result.stdout)
    assert "not a diagnostic device" in answer["disclaimer"]
    rows = answer["predictions"]
    assert [("error" in row) for row in rows] == [False, True, False]
    assert rows[1]["error"] == "not a recognised image (expected JPEG, PNG, BMP, TIFF or DICOM)"
    assert sum(rows[0]["probabilities"].values()) == pytest.approx(1, abs=1e-5)
    overlays = sorted((tmp_path / "cam").iterdir())
    assert len(overlays) == 2 and overlays[0].read_bytes()[:4] == b"\x89PNG"
    assert "broken.jpeg: not a recognised image" in " ".join(result.stderr.split())


def test_explain_after_predict_on_the_same_predictor(tiny_run, shared_images):
    """The server predicts and explains with one model in any order: inference must leave it usable for gradients."""
    predictor = Predictor(tiny_run)
    files = [str(p) for p in shared_images[:2]]
    for _ in range(2):
        heatmaps = predictor.explain(predictor.predict_files(files))
        assert len(heatmaps) == 2 and all(np.isfinite(h).all() and h.max() > 0 for h in heatmaps)


def test_predict_folder_csv_onnx(tiny_run, exported, shared_data):
    folder = shared_data / "train" / "NORMAL"
    pattern = str(folder / "IM-011*.jpeg")
    result = runner.invoke(app, ["predict", "--model", str(tiny_run), "--backend", "onnx", "--csv", pattern])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))  # stdout is plain CSV, nothing else
    assert len(rows) == len(expand_inputs([pattern])) > 0
    assert result.stderr.startswith("Research software, not a diagnostic device")


def test_predict_table_says_research_only(tiny_run, shared_images):
    result = runner.invoke(app, ["predict", "--model", str(tiny_run), str(shared_images[0])])
    assert result.exit_code == 0
    assert "Research software, not a diagnostic device" in " ".join(result.output.split())


def test_predict_with_missing_model(tmp_path, shared_images):
    result = runner.invoke(app, ["predict", "--model", str(tmp_path), str(shared_images[0])])
    assert result.exit_code == 2 and "no model bundle here" in result.output


def test_expand_inputs_walks_folders(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "x.png").write_bytes(b"")
    (tmp_path / "a" / "notes.txt").write_text("")
    assert expand_inputs([str(tmp_path / "a")]) == [str(tmp_path / "a" / "b" / "x.png")]


def test_shipped_model_is_the_default(shared_images):
    """`pneumo predict` without --model uses models/pneumo-ensemble, which is in the repository."""
    result = runner.invoke(app, ["predict", "--json", str(shared_images[0])])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["model"] == "pneumo-ensemble"
    onnx = runner.invoke(app, ["predict", "--json", "--backend", "onnx", str(shared_images[0])])
    assert json.loads(onnx.stdout)["predictions"][0]["class"] == answer["predictions"][0]["class"]


def test_shipped_model_adapts_priors_with_its_validation_fit(shared_images):
    """--adapt priors on a batch uses the BCTS calibration stored in the shipped bundle and its ONNX file."""
    for backend in ("torch", "onnx"):
        predictor = Predictor("models/pneumo-mobilenet", backend=backend)
        assert predictor.metadata["prior_adaptation"]["source"] == "validation"
    images = np.stack([predictor.load(str(path))[0] for path in shared_images])
    plain, adapted = predictor.probabilities(images), predictor.probabilities(images, adapt=True)
    np.testing.assert_allclose(adapted.sum(1), 1, atol=1e-6)
    assert not np.allclose(plain, adapted)
    result = runner.invoke(app, ["predict", "--json", "--adapt", "priors", *map(str, shared_images)])
    assert result.exit_code == 0 and json.loads(result.stdout)["adapt_priors"] is True


def test_file_names_are_printed_as_they_are_never_as_markup(tmp_path):
    """Rich markup in a file or folder name is shown literally, and never breaks the output."""
    from tests.conftest import jpeg_bytes, xray_like

    folder = tmp_path / "["
    folder.mkdir()
    names = ["[bold red]markup.jpeg", "plain.jpeg"]
    for name in names:
        (folder / name).write_bytes(jpeg_bytes(xray_like(3, 128)))
    (folder / "[broken].jpeg").write_bytes(b"not an image")
    for extra in ([], ["--json"], ["--csv"]):
        result = runner.invoke(app, ["predict", "--model", "models/pneumo-cnn", *extra, str(folder)])
        assert result.exit_code == 1, result.output  # the broken file fails, the others are answered
        assert isinstance(result.exception, SystemExit), result.exception  # exit 1 for the broken file, not a crash
        text = "".join(result.output.split())
        assert "[broken].jpeg:notarecognisedimage" in text  # the error line, never folded
        if extra:  # JSON and CSV hold the names whole (the table folds long ones over lines)
            assert "[boldred]markup.jpeg" in text


def test_many_files_go_in_chunks_with_a_progress_bar_and_into_out(tiny_run, shared_data, tmp_path, monkeypatch):
    """Over PREDICT_CHUNK files: the same answers as one batch (the bar, on stderr, shows only on a terminal), and
    --out written."""
    import pneumo.cli.predicting

    monkeypatch.setattr(pneumo.cli.predicting, "PREDICT_CHUNK", 4)
    files = [str(p) for p in sorted((shared_data / "train" / "NORMAL").glob("*.jpeg"))[:10]]
    out = tmp_path / "answers.csv"
    result = runner.invoke(app, ["predict", "--model", str(tiny_run), "--json", "--out", str(out), *files])
    assert result.exit_code == 0, result.output
    chunked = json.loads(result.stdout)["predictions"]
    whole = Predictor(tiny_run).predict_files(files)
    assert [row["class"] for row in chunked] == [p.label for p in whole]
    rows = list(csv.DictReader(out.open()))
    assert [row["file"] for row in rows] == files and rows[0]["p_pneumonia"]
    refused = runner.invoke(app, ["predict", "--model", str(tiny_run), "--out", str(tmp_path / "x.txt"), files[0]])
    assert refused.exit_code == 2 and "name a .json or .csv file" in refused.output


def test_folders_are_searched_by_content_as_pacs_exports_are_written(tmp_path):
    """Extensionless DICOM files are found by their preamble; other files are skipped, counted and listed."""
    from tests.conftest import dicom_bytes

    series = tmp_path / "pacs" / "STUDY1" / "SERIES1"
    series.mkdir(parents=True)
    (series / "IM00001").write_bytes(dicom_bytes(np.arange(64 * 64).reshape(64, 64) % 4000))
    (series / "IM00002").write_bytes(dicom_bytes(np.arange(64 * 64).reshape(64, 64) % 3000))
    (tmp_path / "pacs" / "README").write_text("export notes")
    found = find_inputs([str(tmp_path / "pacs")])
    assert [Path(f).name for f in found.files] == ["IM00001", "IM00002"]
    assert [Path(f).name for f in found.skipped] == ["README"]
    listing = tmp_path / "skipped.txt"
    result = runner.invoke(app, ["predict", "--model", "pneumo-cnn", "--json", "--force", "--skipped", str(listing),
                                 str(tmp_path / "pacs")])
    assert result.exit_code == 1  # something was skipped: the exit code says so
    assert len(json.loads(result.stdout)["predictions"]) == 2
    assert [Path(f).name for f in json.loads(result.stdout)["skipped"]] == ["README"]  # a script can see why
    assert listing.read_text().strip().endswith("README")
