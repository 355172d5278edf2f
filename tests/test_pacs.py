"""Results back to a PACS: predict --dicom-out writes a Structured Report and a Grad-CAM Secondary Capture per DICOM
image, and pneumo send stores them in a real DICOM server (Debian's Orthanc, started here), read back and checked."""

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from tests.conftest import dicom_bytes

ORTHANC = shutil.which("Orthanc") or shutil.which("/usr/sbin/Orthanc")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    """A throwaway Orthanc: DICOM on one free port (AE title ORTHANC), its REST API on another."""
    if ORTHANC is None:
        if os.environ.get("PNEUMO_CI"):
            pytest.fail("Orthanc is not installed, and CI must run these tests (.ci/run installs it)")
        pytest.skip("Orthanc is not installed (.ci/run installs Debian's orthanc package)")
    folder = tmp_path_factory.mktemp("orthanc")
    dicom_port, http_port = free_port(), free_port()
    config = {"Name": "pneumo-test", "StorageDirectory": str(folder / "storage"), "IndexDirectory": str(folder / "index"),
              "DicomAet": "ORTHANC", "DicomPort": dicom_port, "HttpPort": http_port, "RemoteAccessAllowed": False,
              "AuthenticationEnabled": False, "DicomCheckCalledAet": True, "DicomAlwaysAllowStore": True,
              "Plugins": [], "StableAge": 1}
    (folder / "orthanc.json").write_text(json.dumps(config))
    process = subprocess.Popen([ORTHANC, str(folder / "orthanc.json")], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{http_port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/system", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        process.kill()
        pytest.fail(f"Orthanc did not start: {process.stderr.read().decode()[-2000:]}")
    yield {"dicom_port": dicom_port, "url": url}
    process.terminate()
    process.wait(timeout=30)


def pacs_image(path, patient: str = "CHILD-9") -> pydicom.Dataset:
    """A DICOM X-ray as a PACS exports it: patient, study, series and instance identified."""
    dataset = pydicom.dcmread(io.BytesIO(dicom_bytes(np.random.default_rng(3).integers(0, 4000, (128, 128)))))
    dataset.PatientID, dataset.PatientName = patient, "Doe^Jo"
    dataset.StudyInstanceUID, dataset.SeriesInstanceUID = generate_uid(), generate_uid()
    dataset.save_as(path)
    return dataset


def run(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "pneumo.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def test_reports_are_written_sent_to_a_pacs_and_read_back(untrained, orthanc, tmp_path):
    exports = tmp_path / "pacs"
    exports.mkdir()
    source = pacs_image(exports / "IM00001")
    predicted = run("predict", "--model", untrained, exports / "IM00001", "--json", "--dicom-out", tmp_path / "out")
    assert predicted.returncode == 0, predicted.stderr
    answer = json.loads(predicted.stdout)
    assert "wrote 2 DICOM objects for 1 images" in predicted.stderr
    label = answer["predictions"][0]["class"]
    written = sorted((tmp_path / "out").iterdir())
    assert [p.name.rsplit("-", 1)[1] for p in written] == ["gradcam.dcm", "sr.dcm"]

    sent = run("send", tmp_path / "out", "--to", f"127.0.0.1:{orthanc['dicom_port']}", "--aet", "ORTHANC")
    assert sent.returncode == 0 and "sent 2 of 2 objects to ORTHANC" in sent.stdout, sent.stdout + sent.stderr
    stored = httpx.get(f"{orthanc['url']}/instances").json()
    objects = [pydicom.dcmread(io.BytesIO(httpx.get(f"{orthanc['url']}/instances/{i}/file").content)) for i in stored]
    by_class = {o.SOPClassUID.name: o for o in objects}
    report, capture = by_class["Comprehensive SR Storage"], by_class["Secondary Capture Image Storage"]
    for item in (report, capture):
        assert item.StudyInstanceUID == source.StudyInstanceUID and item.PatientID == "CHILD-9"
        assert item.SeriesInstanceUID != source.SeriesInstanceUID  # a series of its own in the image's study
    content = {entry.ConceptNameCodeSequence[0].CodeMeaning: entry for entry in report.ContentSequence}
    finding = content["Finding"].ConceptCodeSequence[0]
    assert finding.CodingSchemeDesignator == "SCT"
    assert finding.CodeMeaning.lower() == {"NORMAL": "normal", "Bacterial Pneumonia": "bacterial pneumonia",
                                           "Viral Pneumonia": "viral pneumonia"}[label]
    probabilities = [float(content[f"Probability of {name}"].MeasuredValueSequence[0].NumericValue)
                     for name in ("normal", "bacterial", "viral")]
    assert probabilities == pytest.approx(list(answer["predictions"][0]["probabilities"].values()), abs=1e-5)
    assert content["Source of Measurement"].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert "not a diagnostic device" in content["Comment"].TextValue
    assert content["Algorithm Name"].TextValue == "untrained"
    assert capture.Rows > 0 and capture.SamplesPerPixel == 3 and capture.pixel_array.std() > 0


def test_sending_to_no_pacs_fails_with_the_reason(untrained, tmp_path):
    folder = tmp_path / "objects"
    folder.mkdir()
    pacs_image(folder / "a.dcm")
    sent = run("send", folder, "--to", f"127.0.0.1:{free_port()}", "--aet", "NOBODY")
    assert sent.returncode == 1 and "no association with NOBODY" in sent.stderr


def test_send_names_what_is_not_dicom_and_what_is_missing(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not DICOM")
    sent = run("send", notes, "--to", f"127.0.0.1:{free_port()}", "--aet", "PACS")
    assert sent.returncode == 1 and "notes.txt: not a DICOM object" in sent.stderr and "Traceback" not in sent.stderr
    missing = run("send", tmp_path / "nowhere", "--to", "127.0.0.1:104", "--aet", "PACS")
    assert missing.returncode == 2 and "no such file or folder" in missing.stderr
    port = run("send", notes, "--to", "127.0.0.1:abc", "--aet", "PACS")
    assert port.returncode == 2 and "--to 127.0.0.1:abc: give the PACS as HOST:PORT" in port.stderr  # no emoji
