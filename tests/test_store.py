"""Archive runs: patient identifiers in answers (--phi), and the Parquet results store (streaming, resuming after a
kill, skipping by content), on synthetic images and an untrained model."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pneumo.cli import app
from pneumo.privacy import Identifiers
from tests.conftest import dicom_bytes, jpeg_bytes, xray_like

runner = CliRunner()


def patient_dicom(patient: str) -> bytes:
    import io

    import pydicom

    dataset = pydicom.dcmread(io.BytesIO(dicom_bytes(np.arange(64 * 64).reshape(64, 64) % 4000)))
    dataset.PatientID = patient
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    return buffer.getvalue()


def answers(model, path, *flags, env=None):
    result = subprocess.run([sys.executable, "-m", "pneumo.cli", "predict", "--model", str(model), "--json", *flags,
                             str(path)], capture_output=True, text=True, timeout=300, env=env)
    return result


def test_patient_ids_are_dropped_by_default_and_hashed_with_a_site_secret(untrained, tmp_path):
    scan = tmp_path / "scan.dcm"
    scan.write_bytes(patient_dicom("CHILD-0042"))
    dropped = answers(untrained, scan)
    assert dropped.returncode == 0, dropped.stderr
    document = json.loads(dropped.stdout)
    assert "CHILD-0042" not in dropped.stdout and document["patient_identifiers"] == "drop"
    assert "PatientID" not in document["predictions"][0]["dicom"]
    assert document["predictions"][0]["dicom"]["SOPInstanceUID"]  # the image's own UIDs stay, to link results
    kept = json.loads(answers(untrained, scan, "--phi", "keep").stdout)
    assert kept["predictions"][0]["dicom"]["PatientID"] == "CHILD-0042"
    refused = answers(untrained, scan, "--phi", "hash", env={k: v for k, v in os.environ.items() if k != "PNEUMO_PHI_KEY"})
    assert refused.returncode == 2 and "PNEUMO_PHI_KEY" in refused.stderr
    secret = {**os.environ, "PNEUMO_PHI_KEY": "s" * 24}
    first = json.loads(answers(untrained, scan, "--phi", "hash", env=secret).stdout)["predictions"][0]["dicom"]
    again = json.loads(answers(untrained, scan, "--phi", "hash", env=secret).stdout)["predictions"][0]["dicom"]
    assert first["PatientID"] == again["PatientID"] and first["PatientID"].startswith("h:")
    assert "CHILD-0042" not in first["PatientID"]
    other_site = Identifiers("hash", b"t" * 24).pseudonym("CHILD-0042")
    assert other_site != first["PatientID"] and Identifiers("hash", b"s" * 24).pseudonym("CHILD-0042") == first["PatientID"]


def archive(folder, count: int, *, start: int = 0):
    folder.mkdir(parents=True, exist_ok=True)
    for number in range(start, start + count):
        (folder / f"IM{number:05d}.jpeg").write_bytes(jpeg_bytes(xray_like(number, 96)))
    return folder


def rows(store):
    return pq.ParquetDataset(sorted(str(p) for p in store.glob("part-*.parquet"))).read().to_pylist()


def test_a_store_is_filled_resumed_and_skips_what_it_holds(untrained, tmp_path):
    folder = archive(tmp_path / "archive", 6)
    (folder / "copy.jpeg").write_bytes((folder / "IM00001.jpeg").read_bytes())  # the same image twice
    (folder / "scan").write_bytes(patient_dicom("CHILD-7"))  # a PACS export: no extension
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.jpeg").write_bytes(b"\xff\xd8 broken")
    store = tmp_path / "results.parquet"
    first = runner.invoke(app, ["predict", "--model", str(untrained), str(folder), "--out", str(store)])
    assert first.exit_code == 1, first.output  # the broken file and the skipped note say so
    table = rows(store)
    assert len(table) == 8 and len({row["content_sha256"] for row in table}) == 8  # 6 + scan + broken; copy skipped
    scan = next(row for row in table if row["file"].endswith("scan"))
    assert scan["sop_instance_uid"] and scan["patient"] is None  # identifiers dropped by default
    assert next(row for row in table if row["file"].endswith("broken.jpeg"))["error"]
    answered = [row for row in table if not row["error"]]
    assert all(row["p_normal"] + row["p_bacterial"] + row["p_viral"] == pytest.approx(1, abs=1e-5) for row in answered)
    assert {row["model_sha256"] for row in table} == {json.loads(runner.invoke(app, [
        "predict", "--model", str(untrained), "--json", str(folder / "IM00000.jpeg")]).stdout)["model_sha256"]}

    (folder / "IM00002.jpeg").rename(folder / "moved.jpeg")  # moved: the same content, not redone
    archive(folder, 2, start=100)
    again = runner.invoke(app, ["predict", "--model", str(untrained), str(folder), "--out", str(store)])
    assert "2 images answered now" in " ".join(again.output.split())
    table = rows(store)
    assert len(table) == 10 and len({row["content_sha256"] for row in table}) == 10
    other = runner.invoke(app, ["predict", "--model", str(untrained), str(folder), "--out", str(store), "--decision",
                                "argmax"])
    assert other.exit_code == 2 and "holds answers made with other options (decision 'operating-point' -> " \
        "'argmax')" in " ".join(other.output.split())
    summary = json.loads(runner.invoke(app, ["results", str(store), "--json"]).stdout)
    model = next(iter(summary["models"].values()))
    assert summary["rows"] == 10 and model["images"] == 10 and model["errors"] == 1
    assert sum(model["classes"].values()) + model["not_classified"] + model["errors"] == 10
    # The terminal summary shows every figure whole in 80 columns.
    (sha, model), = summary["models"].items()
    shown = runner.invoke(app, ["results", str(store)], env={"COLUMNS": "80"}).output
    assert max(map(len, shown.splitlines())) <= 80 and "…" not in shown
    lines = {line.strip("│ ").split(" ", 1)[0]: line for line in shown.splitlines()}
    assert sha in "".join(shown.replace("│", "").split())  # folded over two lines, not cut
    assert lines["errors"].rstrip("│ ").endswith(" 1")
    assert ", ".join(f"{name} {count}" for name, count in model["classes"].items()) in lines["classes"]
    assert f"{model['first'][:19]} to {model['last'][:19]}" in lines["answered"]


def test_a_run_killed_mid_way_resumes_without_losing_or_doubling_a_file(untrained, tmp_path):
    folder = archive(tmp_path / "archive", 700)
    store = tmp_path / "results.parquet"
    command = [sys.executable, "-m", "pneumo.cli", "predict", "--model", str(untrained), str(folder), "--out", str(store)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not list(store.glob("part-*.parquet")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)  # after the first chunk of 256 is stored, before the last
    process.wait()
    written = rows(store)
    assert 0 < len(written) < 700, "the run was not stopped part-way"
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    table = rows(store)
    assert len(table) == 700 and len({row["content_sha256"] for row in table}) == 700
    assert sorted(row["file"] for row in table) == sorted(str(p) for p in folder.iterdir())
