"""A corpus of hostile and broken uploads: each gets its exact status and message, and the server keeps serving.

Memory per bomb is measured in benchmarks/serve_load.py (peak RSS printed), not here.
"""

import io
import struct

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from pneumo.serving.app import ServerSettings, create_app
from tests.conftest import dicom_bytes, jpeg_bytes, png_with_size, xray_like

LIMIT = 2_000_000


def pil_bytes(array: np.ndarray, kind: str, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, kind)
    return buffer.getvalue()


def noise(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def bmp_header(width: int, height: int) -> bytes:
    """A BMP whose header claims width x height, with no pixel data."""
    return b"BM" + struct.pack("<IHHI", 0, 0, 0, 54) + struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 0, 0, 0, 0)


def dicom_without_pixels() -> bytes:
    import pydicom

    dataset = pydicom.dcmread(io.BytesIO(dicom_bytes(np.arange(64 * 64).reshape(64, 64))))
    del dataset.PixelData
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    return buffer.getvalue()


def dicom_claiming(rows: int, columns: int) -> bytes:
    import pydicom

    dataset = pydicom.dcmread(io.BytesIO(dicom_bytes(np.arange(64 * 64).reshape(64, 64))))
    dataset.Rows, dataset.Columns = rows, columns
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    return buffer.getvalue()


def pydicom_file(name: str) -> bytes:
    from pathlib import Path

    from pydicom.data import get_testdata_file

    return Path(get_testdata_file(name)).read_bytes()


def png_16_bit() -> bytes:
    image = xray_like(4, 128).astype(np.uint16) * 257
    return cv2.imencode(".png", image)[1].tobytes()


def truncated_png() -> bytes:
    data = cv2.imencode(".png", noise((100, 100)))[1].tobytes()
    return data[:len(data) // 2]


# (upload name, bytes, status, the message's exact words after "<name>: ")
REFUSED = [
    ("empty.jpeg", lambda: b"", 422, "file is empty (0 bytes)"),
    ("notes.jpeg", lambda: b"just some text", 415, "not a recognised image (expected JPEG, PNG, BMP, TIFF or DICOM)"),
    ("page.pdf", lambda: b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", 415, "not a recognised image"),
    ("archive.zip", lambda: b"PK\x03\x04" + b"\x00" * 200, 415, "not a recognised image"),
    ("drawing.svg", lambda: b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>", 415,
     "not a recognised image"),
    ("page.html", lambda: b"<html><script>fetch('/v1/model')</script></html>", 415, "not a recognised image"),
    ("anim.gif", lambda: pil_bytes(noise((50, 50)), "GIF"), 415, "GIF images are not supported"),
    ("photo.webp", lambda: pil_bytes(noise((50, 50)), "WEBP"), 415, "WEBP images are not supported"),
    ("cut.jpeg", lambda: jpeg_bytes(xray_like(0, 128))[:600], 422, "truncated JPEG (the end-of-image marker is missing)"),
    ("cut.png", truncated_png, 422, "image data could not be decoded (corrupt file?)"),
    ("bomb.png", lambda: png_with_size(60_000, 60_000), 413, "image is too large (over the limit of 100,000,000 pixels)"),
    ("deep-bomb.png", lambda: png_with_size(10_000, 10_000, bit_depth=16, colour_type=6), 413,
     "image would take 800,000,000 bytes decoded"),
    ("bomb.bmp", lambda: bmp_header(60_000, 60_000), 413, "image is too large"),
    ("blank.png", lambda: cv2.imencode(".png", np.zeros((500, 500), np.uint8))[1].tobytes(), 422,
     "image is nearly uniform (standard deviation 0.00 grey levels, under 2)"),
    ("white.jpeg", lambda: jpeg_bytes(np.full((300, 300), 255, np.uint8)), 422, "image is nearly uniform"),
    ("nopixels.dcm", dicom_without_pixels, 422, "DICOM pixel data cannot be decoded"),
    ("deflated.dcm", lambda: pydicom_file("image_dfl.dcm"), 415,
     "deflated DICOM (transfer syntax 1.2.840.10008.1.2.1.99) is not accepted"),
    ("huge.dcm", lambda: dicom_claiming(60_000, 60_000), 413, "image is 60000x60000 = 3,600,000,000 pixels"),
    ("truncated.dcm", lambda: pydicom_file("MR_truncated.dcm"), 422, "DICOM pixel data cannot be decoded"),
    ("png-named.dcm", lambda: cv2.imencode(".png", xray_like(1, 64))[1].tobytes(), 422, "not a readable DICOM image"),
    ("[bold red]markup.jpeg", lambda: b"text", 415, "not a recognised image"),
    ("../../etc/passwd", lambda: b"root:x:0:0", 415, "not a recognised image"),
    ("oversized.jpeg", lambda: b"\xff\xd8" + b"\x00" * (LIMIT + 10), 413, "file is over the limit of 2,000,000 bytes"),
    ("huge-body.jpeg", lambda: b"\xff\xd8" + b"\x00" * (LIMIT + 100_000), 413, "request body of"),
]

ACCEPTED = [
    ("deep.png", png_16_bit),
    ("cmyk.jpeg", lambda: pil_bytes(noise((64, 64, 4)), "JPEG", "CMYK")),
    ("rgba.png", lambda: cv2.imencode(".png", np.dstack([xray_like(2, 64)] * 3 + [np.full((64, 64), 40, np.uint8)]))[1].tobytes()),
    ("really-a-png.jpeg", lambda: cv2.imencode(".png", xray_like(5, 64))[1].tobytes()),
    ("scan.dcm", lambda: dicom_bytes(np.arange(64 * 64).reshape(64, 64))),
]


@pytest.fixture(scope="module")
def client(tiny_run):
    return TestClient(create_app(tiny_run, settings=ServerSettings(max_bytes=LIMIT)))


@pytest.mark.parametrize("name, payload, status, message", REFUSED, ids=[r[0] for r in REFUSED])
def test_hostile_upload_is_refused_with_its_reason(client, name, payload, status, message):
    response = client.post("/v1/predict", files={"file": (name, payload())})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert message in error
    if not message.startswith("request body"):
        assert error.startswith(f"{name}: ")  # the name as sent: never interpreted (markup, paths)
    assert client.get("/healthz").json()["status"] == "ok"


@pytest.mark.parametrize("name, payload", ACCEPTED, ids=[a[0] for a in ACCEPTED])
def test_unusual_but_valid_images_are_answered(client, name, payload):
    response = client.post("/v1/predict", files={"file": (name, payload())})
    assert response.status_code == 200, response.text
    assert sum(response.json()["probabilities"].values()) == pytest.approx(1, abs=1e-5)


def test_malformed_requests_get_the_apps_error_schema(client, shared_images):
    image = shared_images[0].read_bytes()
    cases = [
        (client.post("/v1/predict", files=[("file", ("a.jpeg", image))] * 3), 400, "3 files in one request"),
        (client.post("/v1/predict", json={"file": "a.jpeg"}), 422, "send one image as the multipart field 'file'"),
        (client.post("/v1/predict?gradcam=perhaps", files={"file": ("a.jpeg", image)}), 422, "gradcam"),
        (client.get("/v1/predict"), 405, "Method Not Allowed"),
        (client.get("/v1/nothing-here"), 404, "Not Found"),
    ]
    for response, status, words in cases:
        assert response.status_code == status and words in response.json()["error"]
    assert client.post("/v1/predict", files={"file": ("a.jpeg", image)}).status_code == 200
    assert len(REFUSED) + len(ACCEPTED) + len(cases) >= 25
