"""One small run of each remaining command: --version, prepare, show-data, show-augment, card."""

import json
import re

from typer.testing import CliRunner

import pneumo
from pneumo.cli import app
from tests.conftest import write_archive

runner = CliRunner()


def flat(result) -> str:
    return " ".join(result.output.split())


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert f"pneumo {pneumo.__version__}" in result.output and "not a diagnostic device" in result.output


def test_prepare_prints_counts_and_saves_the_split(tmp_path):
    src = write_archive(tmp_path / "chest_xray", normal=8, bacteria=8, virus=8)
    result = runner.invoke(app, ["prepare", "--data", str(src), "--cache-dir", str(tmp_path / "c"), "--size", "32"])
    assert result.exit_code == 0, result.output
    assert "24 decoded" in flat(result) and "patients on both sides" in flat(result)
    again = runner.invoke(app, ["prepare", "--data", str(src), "--cache-dir", str(tmp_path / "c"), "--size", "32",
                                "--split", "random"])
    assert "0 decoded, 24 reused" in flat(again)
    assert list((tmp_path / "c").rglob("split-random-seed42.csv"))


def test_prepare_missing_data(tmp_path):
    result = runner.invoke(app, ["prepare", "--data", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "no such data folder" in result.output


def test_data_figures(tmp_path):
    src = write_archive(tmp_path / "chest_xray")
    for command in ("show-data", "show-augment"):
        out = tmp_path / f"{command}.png"
        result = runner.invoke(app, [command, "--data", str(src), "--cache-dir", str(tmp_path / "c"), "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert out.read_bytes()[:4] == b"\x89PNG" and out.stat().st_size > 10_000
    stronger = runner.invoke(app, ["show-augment", "--data", str(src), "--cache-dir", str(tmp_path / "c"), "--out",
                                   str(tmp_path / "strong.png"), "--brightness", "0.1", "--contrast", "0.2", "--gamma", "0.3"])
    assert stronger.exit_code == 0 and (tmp_path / "strong.png").is_file(), stronger.output
    bad = runner.invoke(app, ["show-augment", "--data", str(src), "--cache-dir", str(tmp_path / "c"), "--index", "99"])
    assert bad.exit_code == 2 and "The image 'index' must be in [0, 11]. Got 99 instead." in flat(bad)


def test_model_card(tiny_run, shared_data, cache_dir, tmp_path):
    runner.invoke(app, ["evaluate", "--model", str(tiny_run), "--data", str(shared_data), "--cache-dir", str(cache_dir),
                        "--out", str(tmp_path / "ev"), "--resamples", "100"])
    result = runner.invoke(app, ["card", "--model", str(tiny_run), "--metrics", str(tmp_path / "ev" / "metrics.json"),
                                 "--out", str(tmp_path / "CARD.md")])
    assert result.exit_code == 0, result.output
    card = (tmp_path / "CARD.md").read_text()
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert "Research software, not a diagnostic device" in card
    assert "CC BY 4.0" in card and "not laboratory-confirmed" in card and "Adults" in card
    assert f"| Accuracy | {metrics['accuracy']:.4f} |" in card


def test_shipped_card_says_why_targets_are_missed(tmp_path):
    result = runner.invoke(app, ["card", "--model", "models/pneumo-cnn", "--out", str(tmp_path / "card.md")])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "card.md").read_text()
    assert "| no, by" in text and "Why targets are missed" in text and "Research software" in text
    assert re.search(r"Training time: [\d.]+ s on \S+", text)  # where it was trained, from the run's environment


def test_a_torch_and_torchvision_from_different_builds_get_a_sentence_not_a_traceback(monkeypatch):
    """The error torchvision raises when its operators do not match torch ends a command with what to install."""
    import pneumo.models.bundle

    def mismatched(*args, **kwargs):
        raise RuntimeError("operator torchvision::nms does not exist")

    monkeypatch.setattr(pneumo.models.bundle, "load_bundle", mismatched)
    result = runner.invoke(app, ["card", "--model", "pneumo-cnn"])
    output = " ".join(result.output.split())
    assert result.exit_code == 2 and "torchvision" in output and "are not a pair" in output
    assert "--index-url https://download.pytorch.org/whl/cpu" in output and "Traceback" not in output


def test_library_warnings_stay_off_the_terminal(untrained, tmp_path):
    """pydicom warns about a VOI LUT applied to rescaled values; the file is answered and the terminal sees no warning."""
    import io
    import subprocess
    import sys

    import numpy as np
    import pydicom
    import pytest
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    from pneumo.data.readers import read_image
    from tests.conftest import dicom_bytes

    dataset = pydicom.dcmread(io.BytesIO(dicom_bytes(np.arange(64 * 64).reshape(64, 64) % 4000)))
    lut = Dataset()
    lut.LUTDescriptor = [4096, 0, 16]
    lut.add_new(0x00283006, "OW", np.linspace(0, 65535, 4096).astype(np.uint16).tobytes())  # LUTData: a ramp
    dataset.VOILUTSequence = Sequence([lut])
    path = tmp_path / "voi-lut.dcm"
    dataset.save_as(path)
    with pytest.warns(UserWarning, match="VOI LUT"):  # the library does warn
        read_image(path)
    result = subprocess.run([sys.executable, "-m", "pneumo.cli", "predict", "--model", str(untrained), "--json",
                             str(path)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["predictions"][0]["class"]
    assert "Warning" not in result.stderr and "warn" not in result.stderr.lower(), result.stderr


def test_every_command_names_its_model_with_the_model_option(tmp_path):
    """The model is --model/-m everywhere; given as an argument, it is refused with the option's name."""
    for command in (["evaluate"], ["card"], ["calibrate"], ["export"]):
        result = runner.invoke(app, [*command, "models/pneumo-cnn"])
        assert result.exit_code == 2 and "name the model with --model models/pneumo-cnn" in flat(result), command
    adapt = runner.invoke(app, ["adapt", "models/pneumo-cnn", "--labels", "x.csv", "--out", str(tmp_path / "site")])
    assert adapt.exit_code == 2 and "is a model, not a site image: name the model with --model" in flat(adapt)


def test_train_and_show_augment_flags_are_the_configuration_options():
    """Each option of the training configuration is a train flag with the field's own help and default, and each
    augmentation option a show-augment flag: none is declared twice."""
    from dataclasses import fields

    from pneumo.cli.base import config_flags
    from pneumo.config import FLAT, SECTIONS, TrainConfig

    described = {flat for flat, (section, name) in FLAT.items()
                 if "help" in next(f for f in fields(SECTIONS[section]) if f.name == name).metadata}
    assert described == set(FLAT)  # every option is described once, in the configuration
    assert {p.name for p in config_flags()} == set(FLAT)
    assert {p.name for p in config_flags("augment")} == {f.name for f in fields(SECTIONS["augment"])}
    lr = next(p for p in config_flags() if p.name == "lr")
    assert lr.annotation.__metadata__[0].show_default == str(TrainConfig().optim.lr)
    help_text = flat(runner.invoke(app, ["train", "--help"], terminal_width=200))
    assert "--distill-temperature" in help_text and "--bundle-weights" in help_text


def test_commands_do_not_rewrite_a_shipped_model():
    calibrate = runner.invoke(app, ["calibrate", "--model", "pneumo-cnn"])
    assert calibrate.exit_code == 2 and "pneumo-cnn is a shipped model, and calibrate rewrites" in flat(calibrate)
    export = runner.invoke(app, ["export", "--model", "pneumo-cnn"])
    assert export.exit_code == 2 and "name the file to write with --out" in flat(export)


def test_a_torchvision_that_fails_to_load_gets_the_sentence_at_start_up(tmp_path):
    """torchvision fails as it is imported, before any command runs: the command line still says what to do."""
    import os
    import subprocess
    import sys

    fake = tmp_path / "torchvision"
    fake.mkdir()
    (fake / "__init__.py").write_text('raise RuntimeError("operator torchvision::nms does not exist")\n')
    result = subprocess.run([sys.executable, "-m", "pneumo.cli", "--version"], capture_output=True, text=True,
                            timeout=120, env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
    assert result.returncode == 2 and "are not a pair" in result.stderr and "Traceback" not in result.stderr
