"""Integration: the whole shared training split, organized and prepared."""


import pytest
from typer.testing import CliRunner

from pneumo.cli import app
from pneumo.data.archive import organize
from pneumo.data.cache import prepare_folder
from pneumo.data.splits import make_split
from pneumo.labels import BACTERIAL, NORMAL, VIRAL

pytestmark = pytest.mark.integration


def test_organize_and_prepare_the_shared_split(shared_data, tmp_path):
    before = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in shared_data.rglob("*") if p.is_file())
    result = organize(shared_data, tmp_path / "organized")
    assert dict(result.counts["train"]) == {NORMAL: 1341, BACTERIAL: 2530, VIRAL: 1345}
    assert sum(len(group) - 1 for group in result.duplicate_groups) == 26
    assert not result.problems
    after = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in shared_data.rglob("*") if p.is_file())
    assert before == after  # the source is untouched

    prepared = prepare_folder(tmp_path / "organized", size=128, cache_dir=tmp_path / "cache")
    assert len(prepared.data) == 5216 and not prepared.problems
    split = make_split(prepared.data, method="grouped", seed=42)
    assert split.patient_overlap(prepared.data.patients)["train/val"] == 0
    assert abs((split.roles == "val").mean() - 0.2) < 0.02
    random = make_split(prepared.data, method="random", seed=42)
    assert random.patient_overlap(prepared.data.patients)["train/val"] > 100


def test_cli_prints_the_counts(shared_data, tmp_path):
    result = CliRunner().invoke(app, ["organize", str(shared_data), str(tmp_path / "o")], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "1341" in result.output and "2530" in result.output and "1345" in result.output
    assert "26 byte-identical duplicate file(s)" in result.output


def test_internal_split_file_matches_the_shared_data(shared_data, tmp_path):
    from pathlib import Path

    from pneumo.data.splits import load_split
    from pneumo.training.distill import read_teacher_labels

    prepared = prepare_folder(shared_data, size=128, cache_dir=tmp_path / "cache").data
    split = load_split(Path(__file__).resolve().parents[2] / "splits" / "internal.csv", prepared)
    assert (split.roles != "unused").all()
    assert split.patient_overlap(prepared.patients) == {"train/val": 0, "train/test": 0, "val/test": 0}
    test_patients = len(set(prepared.patients[split.roles == "test"]))
    assert test_patients / len(set(prepared.patients)) >= 0.15
    # Every committed teacher's labels file teaches every training image of the split (by file content).
    labels_files = sorted((Path(__file__).resolve().parents[2] / "configs" / "teachers").glob("*.npz"))
    assert labels_files
    for labels_file in labels_files:
        probabilities, _ = read_teacher_labels(labels_file, prepared.sha256[split.roles == "train"])
        assert probabilities.shape == ((split.roles == "train").sum(), 3)
