import csv
import hashlib
import os
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pneumo.cli import app
from pneumo.data.archive import organize, read_manifest
from pneumo.errors import DataLayoutError
from pneumo.labels import BACTERIAL, NORMAL, VIRAL, LabelError, class_from_name, patient_id
from tests.conftest import jpeg_bytes, write_archive, xray_like

runner = CliRunner()


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("folder, name, expected", [
    ("NORMAL", "IM-0115-0001.jpeg", NORMAL),
    ("PNEUMONIA", "person1_bacteria_1.jpeg", BACTERIAL),
    ("PNEUMONIA", "person1_virus_6.jpeg", VIRAL),
])
def test_class_from_name(folder, name, expected):
    assert class_from_name(folder, name) == expected


def test_unknown_pneumonia_name_is_refused():
    with pytest.raises(LabelError, match="neither 'bacteria' nor 'virus'"):
        class_from_name("PNEUMONIA", "person1_fungus_1.jpeg")


@pytest.mark.parametrize("name, patient", [
    ("person1000_bacteria_2931.jpeg", "person1000"),
    ("IM-0115-0001.jpeg", "IM-0115"),
    ("NORMAL2-IM-0587-0001-0002.jpeg", "NORMAL2-IM-0587"),
    ("scan.png", "scan"),
])
def test_patient_id(name, patient):
    assert patient_id(name) == patient


def test_organize_makes_three_classes_and_manifest(tmp_path):
    src = write_archive(tmp_path / "chest_xray")
    before = tree_digest(src)
    result = organize(src, tmp_path / "out")
    assert {p.name for p in (tmp_path / "out" / "train").iterdir()} == {"NORMAL", "Bacterial Pneumonia", "Viral Pneumonia"}
    assert result.counts["train"] == {NORMAL: 4, BACTERIAL: 4, VIRAL: 4}
    records = read_manifest(tmp_path / "out" / "manifest.csv")
    assert len(records) == 12 and all(r.sha256 and r.width == 96 for r in records)
    with (tmp_path / "out" / "manifest.csv").open() as handle:
        assert next(csv.reader(handle)) == ["path", "split", "class", "patient", "sha256", "width", "height", "source"]
    assert tree_digest(src) == before  # nothing in SRC changed
    assert result.copied == 12 and result.linked == 0  # copies by default: DEST is not the user's archive
    placed = tmp_path / "out" / "train" / "NORMAL" / "IM-0000-0000.jpeg"
    assert not placed.samefile(src / "train" / "NORMAL" / "IM-0000-0000.jpeg")


def test_organize_links_only_when_asked(tmp_path):
    src = write_archive(tmp_path / "chest_xray")
    result = organize(src, tmp_path / "out", link=True)
    assert result.linked == 12
    assert (tmp_path / "out" / "train" / "NORMAL" / "IM-0000-0000.jpeg").samefile(src / "train" / "NORMAL" / "IM-0000-0000.jpeg")


def test_images_in_nested_folders_are_reported_not_skipped_silently(tmp_path):
    src = write_archive(tmp_path / "chest_xray")
    nested = src / "train" / "NORMAL" / "batch2"
    nested.mkdir()
    (nested / "IM-0100-0001.jpeg").write_bytes(b"x")
    result = organize(src, tmp_path / "out")
    assert any(p.source.endswith("batch2") and "a folder inside train/NORMAL/" in p.reason for p in result.problems)


def test_organize_twice_changes_nothing(tmp_path):
    src = write_archive(tmp_path / "chest_xray")
    organize(src, tmp_path / "out")
    again = organize(src, tmp_path / "out")
    assert (again.linked, again.copied, again.unchanged) == (0, 0, 12)


def test_organize_finishes_a_killed_run(tmp_path):
    src = write_archive(tmp_path / "chest_xray")
    dest = tmp_path / "out"
    organize(src, dest)
    # Simulate a kill: some files never placed, a temporary left behind, no manifest.
    victim = dest / "train" / "NORMAL" / "IM-0000-0000.jpeg"
    victim.unlink()
    (victim.parent / ".IM-0000-0000.jpeg.pneumo-tmp").write_bytes(b"half")
    (dest / "manifest.csv").unlink()
    result = organize(src, dest)
    assert result.copied == 1 and result.unchanged == 11
    assert victim.read_bytes() == (src / "train" / "NORMAL" / "IM-0000-0000.jpeg").read_bytes()
    assert not any(p.name.endswith(".pneumo-tmp") for p in dest.rglob("*"))
    assert len(read_manifest(dest / "manifest.csv")) == 12


def test_organize_never_overwrites_a_different_file(tmp_path):
    src = write_archive(tmp_path / "chest_xray")
    dest = tmp_path / "out"
    mine = dest / "train" / "NORMAL" / "IM-0000-0000.jpeg"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"the user's own file")
    result = organize(src, dest)
    assert mine.read_bytes() == b"the user's own file"
    assert any("already exists with different content" in p.reason for p in result.problems)


def test_organize_reports_bad_files_and_exits_nonzero(tmp_path):
    src = write_archive(tmp_path / "chest_xray")
    (src / "train" / "PNEUMONIA" / "person9_fungus_1.jpeg").write_bytes(b"x")
    (src / "train" / "NORMAL" / "IM-0099-0001.jpeg").write_text("not an image")
    (src / "train" / "NORMAL" / "IM-0098-0001.jpeg").write_bytes(b"")
    result = runner.invoke(app, ["organize", str(src), str(tmp_path / "out")])
    assert result.exit_code == 1
    output = " ".join(result.output.split())
    assert "person9_fungus_1.jpeg: PNEUMONIA file name says neither 'bacteria' nor 'virus'" in output
    assert "IM-0099-0001.jpeg: not a recognised image" in output
    assert "IM-0098-0001.jpeg: file is empty (0 bytes)" in output
    assert runner.invoke(app, ["organize", str(src), str(tmp_path / "out"), "--skip-bad"]).exit_code == 0


def test_organize_tolerates_nesting_litter_and_missing_class(tmp_path):
    root = tmp_path / "download"
    write_archive(root / "chest_xray", split="train")
    write_archive(root / "chest_xray" / "chest_xray", split="train")  # the archive's nested copy
    (root / "__MACOSX" / "chest_xray" / "train" / "NORMAL").mkdir(parents=True)
    (root / "__MACOSX" / "chest_xray" / "train" / "NORMAL" / "._IM-0000-0000.jpeg").write_bytes(b"\x00")
    (root / "chest_xray" / "test" / "NORMAL").mkdir(parents=True)  # test/ without PNEUMONIA/
    result = organize(root, tmp_path / "out")
    assert result.counts["train"][NORMAL] == 4
    assert any("nested" in str(r) or "chest_xray/chest_xray" in str(r) for r in result.ignored_roots)
    assert any("missing class folder PNEUMONIA/" in p.reason for p in result.problems)


def test_organize_reads_the_zip(tmp_path):
    src = write_archive(tmp_path / "chest_xray")
    archive = tmp_path / "chest-xray-pneumonia.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for path in src.rglob("*.jpeg"):
            handle.write(path, Path("chest_xray") / path.relative_to(src))
    result = organize(archive, tmp_path / "out")
    assert result.copied == 12 and len(result.problems) == 0


def test_empty_source_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataLayoutError, match="no train/, val/ or test/ folder"):
        organize(tmp_path / "empty", tmp_path / "out")
    result = runner.invoke(app, ["organize", str(tmp_path / "empty"), str(tmp_path / "out")])
    assert result.exit_code == 2 and "no train/, val/ or test/ folder" in " ".join(result.output.split())


def test_dest_inside_src_and_src_inside_dest_are_refused(tmp_path):
    src = write_archive(tmp_path / "chest_xray")
    with pytest.raises(DataLayoutError, match="lies inside SRC"):
        organize(src, src / "organized")
    with pytest.raises(DataLayoutError, match="SRC .*chest_xray lies inside DEST"):
        organize(src, tmp_path)


def test_duplicates_are_grouped(tmp_path):
    src = write_archive(tmp_path / "chest_xray")
    first = src / "train" / "NORMAL" / "IM-0000-0000.jpeg"
    os.link(first, src / "train" / "NORMAL" / "IM-0000-0009.jpeg")  # a byte-identical file
    result = organize(src, tmp_path / "out")
    assert [len(g) for g in result.duplicate_groups] == [2]


def _write_image(path, seed):
    from tests.conftest import jpeg_bytes, xray_like

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg_bytes(xray_like(seed)))


def test_class_folders_in_any_case_are_read_with_every_class(tmp_path):
    """NORMAL / bacterial / Viral folders, no manifest: all three classes, and a word about missing patient ids."""
    from pneumo.data.archive import load_records

    for number, folder in enumerate(["NORMAL", "bacterial", "Viral", "NORMAL", "bacterial"]):
        _write_image(tmp_path / folder / f"case{number:03d}.jpeg", number)
    (tmp_path / "notes").mkdir()
    records, problems = load_records(tmp_path)
    assert sorted(r.label for r in records) == [0, 0, 1, 1, 2]
    assert {r.split for r in records} == {"train"}
    reasons = " ".join(p.reason for p in problems)
    assert "notes" in " ".join(p.source for p in problems) and "not a class folder" in reasons
    assert "5 of 5 images have no patient id" in reasons


def test_class_folders_under_splits_and_an_empty_class_is_reported(tmp_path):
    from pneumo.data.archive import load_records

    _write_image(tmp_path / "train" / "NORMAL" / "a.jpeg", 1)
    _write_image(tmp_path / "train" / "BACTERIAL" / "b.jpeg", 2)
    _write_image(tmp_path / "test" / "normal" / "c.jpeg", 3)
    records, problems = load_records(tmp_path)
    assert sorted((r.split, r.label) for r in records) == [("test", 0), ("train", 0), ("train", 1)]
    assert any("no images of Viral Pneumonia" in p.reason for p in problems)


def test_a_labels_csv_gives_classes_patients_and_splits_and_names_bad_lines(tmp_path):
    from pneumo.data.archive import load_records

    for name, seed in (("x1.jpeg", 1), ("x2.jpeg", 2), ("x3.jpeg", 3), ("sub/x4.jpeg", 4)):
        _write_image(tmp_path / "images" / name, seed)
    labels = tmp_path / "labels.csv"
    labels.write_text("path,class,patient,split\n"
                      "images/x1.jpeg,NORMAL,p1,train\n"
                      "images/x2.jpeg,bacterial,p1,train\n"
                      "images/x3.jpeg,Viral Pneumonia,p2,test\n"
                      "images/sub/x4.jpeg,fungal,p3,train\n"
                      "images/missing.jpeg,viral,p4,train\n")
    records, problems = load_records(labels)
    assert [(r.path, r.label, r.patient, r.split) for r in records] == [
        ("images/x1.jpeg", 0, "p1", "train"), ("images/x2.jpeg", 1, "p1", "train"), ("images/x3.jpeg", 2, "p2", "test")]
    reasons = {p.source.rsplit("/", 1)[-1]: p.reason for p in problems}
    assert "unknown class 'fungal'" in reasons["labels.csv:5"] and reasons["missing.jpeg"] == "file not found"


def test_a_labels_csv_without_its_columns_is_refused(tmp_path):
    from pneumo.data.archive import load_records
    from pneumo.errors import DataLayoutError

    labels = tmp_path / "labels.csv"
    labels.write_text("file,label\na.jpeg,NORMAL\n")
    with pytest.raises(DataLayoutError, match="needs the columns path, class .* missing class, path"):
        load_records(labels)


def test_prepare_and_train_run_on_class_folders_without_shared_data(tmp_path):
    """A whole command path on synthetic data: prepare, then a one-epoch training, from class folders."""
    from typer.testing import CliRunner

    from pneumo.cli import app

    for number in range(24):
        _write_image(tmp_path / "data" / ("NORMAL", "BACTERIAL", "VIRAL")[number % 3] / f"case{number}.jpeg", number)
    runner = CliRunner()
    prepared = runner.invoke(app, ["prepare", "--data", str(tmp_path / "data"), "--cache-dir", str(tmp_path / "cache"),
                                   "--size", "64"])
    assert prepared.exit_code == 0, prepared.output
    assert "no patient id" in " ".join(prepared.output.split())
    trained = runner.invoke(app, ["train", "--model", "cnn", "--epochs", "1", "--size", "64", "--data",
                                  str(tmp_path / "data"), "--cache-dir", str(tmp_path / "cache"), "--runs-dir",
                                  str(tmp_path / "runs"), "--name", "own", "--accelerator", "cpu", "--quiet"])
    assert trained.exit_code == 0, trained.output
    assert (tmp_path / "runs" / "own" / "model.pt").is_file()


def test_a_spreadsheet_labels_csv_with_a_byte_order_mark_and_short_rows(tmp_path):
    from pneumo.data.archive import load_records

    _write_image(tmp_path / "a.jpeg", 1)
    _write_image(tmp_path / "b.jpeg", 2)
    labels = tmp_path / "labels.csv"
    labels.write_bytes("\ufeffpath,class,patient\r\na.jpeg,normal,p1\r\nb.jpeg,viral\r\n,bacterial,p3\r\n".encode())
    records, problems = load_records(labels)
    assert [(r.path, r.label, r.patient) for r in records] == [("a.jpeg", 0, "p1"), ("b.jpeg", 2, "b")]
    assert any(p.reason == "no path in this row" and p.source.endswith("labels.csv:4") for p in problems)


def test_organize_refuses_a_zip_bomb_a_huge_member_and_an_outside_link(tmp_path):
    """Each bad member is a problem naming it; the good images are organized; nothing is inflated whole."""
    src = write_archive(tmp_path / "chest_xray", normal=2, bacteria=2, virus=2)
    outside = tmp_path / "secret.jpeg"
    outside.write_bytes(jpeg_bytes(xray_like(9)))
    (src / "train" / "NORMAL" / "IM-0099-0001.jpeg").symlink_to(outside)
    result = organize(src, tmp_path / "out")
    reasons = {Path(p.source).name: p.reason for p in result.problems}
    assert reasons["IM-0099-0001.jpeg"].startswith("a link to a file outside the archive")
    assert not (tmp_path / "out" / "train" / "NORMAL" / "IM-0099-0001.jpeg").exists()

    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(src.rglob("*.jpeg")):
            if not path.is_symlink():
                archive.write(path, path.relative_to(tmp_path).as_posix())
        archive.writestr("chest_xray/train/NORMAL/IM-0500-0001.jpeg", b"\xff" * 50_000_000)  # inflates ~1000x
    result = organize(bomb, tmp_path / "from-zip")
    reasons = {p.source.rsplit("/", 1)[-1]: p.reason for p in result.problems}
    assert "a zip bomb, not an image" in reasons["IM-0500-0001.jpeg"]
    assert len(result.records) == 6
