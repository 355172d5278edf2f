"""A corpus of hostile and broken uploads: each gets its exact status and message, and the server keeps serving.

Memory per bomb is measured in benchmarks/serve_load.py (peak RSS printed), not here.
"""

import io
import struct

import cv2
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from pneumo.api import load
from pneumo.cli import app
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


def odd_dicom(voi_bits: int | None = None, **attributes) -> bytes:
    """A small DICOM whose display attributes are odd but seen in real exports (or a VOI LUT of ``voi_bits``)."""
    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    dataset = pydicom.dcmread(io.BytesIO(dicom_bytes(np.arange(64 * 64).reshape(64, 64) % 4000)))
    tags = {"WindowCenter": 0x00281050, "WindowWidth": 0x00281051}
    for key, value in attributes.items():
        if key.endswith("Sequence"):
            setattr(dataset, key, Sequence(value))
        else:  # as text, so that a value no DS would hold ("abcdef") reaches the file as some exports write it
            dataset.add_new(tags[key], "LO", value)
    if voi_bits is not None:
        lut = Dataset()
        lut.LUTDescriptor = [16, 0, voi_bits]
        lut.add_new(0x00283006, "OW", np.arange(16, dtype=np.uint16).tobytes())  # LUTData
        dataset.VOILUTSequence = Sequence([lut])
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    return buffer.getvalue()


def grey_with_three_samples() -> bytes:
    """MONOCHROME2 that says 3 samples per pixel, with the bytes for them."""
    import pydicom

    dataset = pydicom.dcmread(io.BytesIO(dicom_bytes(np.arange(64 * 64).reshape(64, 64) % 4000)))
    grey = dataset.pixel_array
    dataset.SamplesPerPixel, dataset.PlanarConfiguration = 3, 0
    dataset.PixelData = np.repeat(grey[..., None], 3, axis=2).astype(np.uint16).tobytes()
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


def cine_dicom(frames: int = 3) -> bytes:
    """A multi-frame DICOM: ``frames`` 64x64 frames."""
    import pydicom

    dataset = pydicom.dcmread(io.BytesIO(dicom_bytes(np.arange(64 * 64).reshape(64, 64))))
    dataset.NumberOfFrames = frames
    dataset.PixelData = np.tile(np.arange(64 * 64, dtype=np.uint16), frames).tobytes()
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
    ("nopixels.dcm", dicom_without_pixels, 415, "a DICOM DX object without an image"),
    ("rtplan.dcm", lambda: pydicom_file("rtplan.dcm"), 415, "a DICOM RTPLAN object without an image"),
    ("empty-window.dcm", lambda: odd_dicom(WindowCenter="", WindowWidth="400"), 422,
     "DICOM display attributes cannot be applied"),
    ("text-window.dcm", lambda: odd_dicom(WindowCenter="abcdef", WindowWidth="400"), 422,
     "DICOM display attributes cannot be applied"),
    ("empty-voi-lut.dcm", lambda: odd_dicom(VOILUTSequence=[]), 422, "DICOM display attributes cannot be applied"),
    ("wide-voi-lut.dcm", lambda: odd_dicom(voi_bits=2000), 422, "DICOM display attributes cannot be applied"),
    ("zero-voi-lut.dcm", lambda: odd_dicom(voi_bits=0), 422, "DICOM display attributes cannot be applied"),
    ("grey-rgb.dcm", grey_with_three_samples, 422, "MONOCHROME2 image with 3 samples per pixel"),
    ("deflated.dcm", lambda: pydicom_file("image_dfl.dcm"), 415,
     "deflated DICOM (transfer syntax 1.2.840.10008.1.2.1.99) is not accepted"),
    ("huge.dcm", lambda: dicom_claiming(60_000, 60_000), 413, "image is 60000x60000 = 3,600,000,000 pixels"),
    ("cine.dcm", cine_dicom, 415, "a multi-frame DICOM (3 frames: a series or cine loop, not one radiograph)"),
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
def client(untrained):
    return TestClient(create_app(untrained, settings=ServerSettings(max_bytes=LIMIT)))


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
    if name == "cmyk.jpeg":  # colour noise: decoded, then refused as outside the model's scope, with the reason
        assert response.json()["not_classified"] == "a colour picture, not a radiograph"
    else:
        assert sum(response.json()["probabilities"].values()) == pytest.approx(1, abs=1e-5)


def test_predict_answers_the_good_file_beside_every_hostile_one(untrained, tmp_path):
    """The same corpus through the CLI: one bad file never costs the others their answers, and each says why."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "good.jpeg").write_bytes(jpeg_bytes(xray_like(3, 128)))
    for name, payload, _, _ in ON_DISK:
        (folder / name.replace("/", "_")).write_bytes(payload())
    files = sorted(str(p) for p in folder.iterdir())
    result = CliRunner().invoke(app, ["predict", "--model", str(untrained), "--json", *files])
    assert result.exit_code == 1, result.output  # some files failed: the exit code says so
    rows = {row["file"].rsplit("/", 1)[-1]: row for row in json.loads(result.stdout)["predictions"]}
    assert rows["good.jpeg"]["class"]
    for name, _, _, message in ON_DISK:
        assert message in rows[name.replace("/", "_")]["error"], name


def test_the_python_api_answers_the_good_file_beside_every_hostile_one(untrained, tmp_path):
    model = load(untrained, backend="torch")
    cases = [case for case in ON_DISK if case[0] != "png-named.dcm"]  # bytes have no name: a PNG is a PNG
    results = model.predict([jpeg_bytes(xray_like(3, 128))] + [payload() for _, payload, _, _ in cases])
    assert results[0].ok and results[0].label
    for result, (name, _, _, message) in zip(results[1:], cases):
        assert not result.ok and message in result.error, name


def test_malformed_requests_get_the_apps_error_schema(client):
    image = jpeg_bytes(xray_like(3, 128))
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


def progressive_scan_bomb() -> bytes:
    """A small progressive JPEG whose scans are repeated far beyond what any encoder writes."""
    data = pil_bytes(xray_like(2, 64), "JPEG")
    progressive = io.BytesIO()
    Image.open(io.BytesIO(data)).save(progressive, "JPEG", progressive=True)
    raw = progressive.getvalue()
    first, end = raw.index(b"\xff\xda"), raw.rindex(b"\xff\xd9")
    return raw[:first] + raw[first:end] * 60 + raw[end:]  # about 600 scans


def dicom_with_frame(frame: bytes, syntax: str, rows: int = 64, columns: int = 64) -> bytes:
    """A DICOM saying rows x columns whose one encapsulated frame is ``frame``."""
    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.uid import UID

    dataset = pydicom.dcmread(io.BytesIO(dicom_bytes(np.arange(64 * 64).reshape(64, 64) % 4000)))
    dataset.file_meta.TransferSyntaxUID = UID(syntax)
    dataset.Rows, dataset.Columns = rows, columns
    dataset.PixelData = encapsulate([frame])
    dataset["PixelData"].VR = "OB"
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def jpeg_claiming(width: int, height: int) -> bytes:
    """A baseline JPEG header (SOF0) claiming width x height, with no image data worth decoding."""
    header = jpeg_bytes(xray_like(1, 16))
    position = header.index(b"\xff\xc0")
    return (header[:position + 5] + height.to_bytes(2, "big") + width.to_bytes(2, "big")
            + header[position + 9:])


def junk_before_sof(jpeg: bytes) -> bytes:
    """Two stray bytes after the first segment: decoders skip them, so the size check must too."""
    length = int.from_bytes(jpeg[4:6], "big")
    return jpeg[:4 + length] + b"\x00\x01" + jpeg[4 + length:]


def tiff_tile_bomb() -> bytes:
    """A little-endian TIFF saying 64x64 whose one deflate tile claims 16000x16000 pixels (its tags, by hand)."""
    import zlib

    payload = zlib.compress(b"\x80" * 4096)
    entries = [(256, 3, 1, 64), (257, 3, 1, 64), (258, 3, 1, 8), (259, 3, 1, 8), (262, 3, 1, 1), (277, 3, 1, 1),
               (322, 4, 1, 16000), (323, 4, 1, 16000), (324, 4, 1, 0), (325, 4, 1, len(payload))]
    header_size = 8 + 2 + 12 * len(entries) + 4
    entries[-2] = (324, 4, 1, header_size)  # the tile's offset: right after the directory
    directory = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHII", tag, kind, count, value) if kind == 4 else struct.pack("<HHIHH", tag, kind, count, value, 0)
        for tag, kind, count, value in entries) + struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8) + directory + payload


def dicom_with_elements(elements: bytes) -> bytes:
    """A small DICOM (explicit VR little endian) with raw data elements put just before its pixel data."""
    data = dicom_bytes(np.arange(64 * 64).reshape(64, 64) % 4000)
    pixels = data.rindex(struct.pack("<HH", 0x7FE0, 0x0010))
    return data[:pixels] + elements + data[pixels:]


def empty_private_elements(count: int) -> bytes:
    """``count`` empty private elements (0029,1000), (0029,1001), ..., (002B,1000), ...: 12 bytes each."""
    return b"".join(struct.pack("<HH2sHI", 0x0029 + 2 * (number // 60_000), 0x1000 + number % 60_000, b"UN", 0, 0)
                    for number in range(count))


def sequence_bomb(items: int) -> bytes:
    """A Modality LUT Sequence of undefined length holding ``items`` empty items (the outside probe's 188 s file)."""
    return (struct.pack("<HH2sHI", 0x0028, 0x3000, b"SQ", 0, 0xFFFFFFFF) + struct.pack("<HHI", 0xFFFE, 0xE000, 0) * items
            + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))


def defined_length_sequence_bomb(elements: int) -> bytes:
    """A Modality LUT Sequence of defined length whose one item holds ``elements`` empty elements."""
    item = empty_private_elements(elements)
    return (struct.pack("<HH2sHI", 0x0028, 0x3000, b"SQ", 0, 8 + len(item)) + struct.pack("<HHI", 0xFFFE, 0xE000, len(item))
            + item)


BOMBS = [
    ("sequence-bomb.dcm", lambda: dicom_with_elements(sequence_bomb(150_000)), 413,
     "more than 100,000 reads to parse its data elements"),
    ("element-bomb.dcm", lambda: dicom_with_elements(empty_private_elements(60_000)), 413,
     "more than 100,000 reads to parse its data elements"),
    ("long-sequence.dcm", lambda: dicom_with_elements(defined_length_sequence_bomb(90_000)), 413,
     "a sequence of 1,080,008 bytes in element (0028,3000), over the limit of 1,048,576"),
    ("scans.jpeg", progressive_scan_bomb, 413, "scans, over the limit of 100"),
    ("frame-bomb.dcm", lambda: dicom_with_frame(jpeg_claiming(30000, 30000), "1.2.840.10008.1.2.4.50"), 413,
     "a compressed frame of 30000x30000 pixels in a 64x64 DICOM image"),
    ("rle-bomb.dcm", lambda: dicom_with_frame(b"\x00" * 64 + b"\x01\x00" * 200_000, "1.2.840.10008.1.2.5"), 413,
     "a compressed frame of 400,064 bytes for a 64x64 image"),
    ("tile-bomb.tiff", tiff_tile_bomb, 413, "image is 16000x16000 = 256,000,000 pixels"),
    ("junk-frame.dcm", lambda: dicom_with_frame(junk_before_sof(jpeg_claiming(30000, 30000)), "1.2.840.10008.1.2.4.50"),
     413, "a compressed frame of 30000x30000 pixels in a 64x64 DICOM image"),
    ("no-sof-frame.dcm", lambda: dicom_with_frame(b"\xff\xd8\xff\xda\x00\x02" + b"\x00" * 64 + b"\xff\xd9",
                                                  "1.2.840.10008.1.2.4.50"), 422,
     "a JPEG frame without a start-of-frame header"),
]


# The files a command-line run or the Python API meets on disk (the body limits are the server's own).
ON_DISK = [case for case in REFUSED + BOMBS if not case[0].startswith(("oversized", "huge-body", "../", "[bold"))]


@pytest.mark.parametrize("name, payload, status, message", BOMBS, ids=[b[0] for b in BOMBS])
def test_bombs_are_refused_from_their_headers(client, name, payload, status, message):
    response = client.post("/v1/predict", files={"file": (name, payload())})
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


def test_a_batch_answers_every_file_in_order_and_names_the_bad_ones(client):
    good = jpeg_bytes(xray_like(3, 128))
    files = [("files", ("a.jpeg", good)), ("files", ("notes.jpeg", b"text")), ("files", ("b.jpeg", good))]
    response = client.post("/v1/predict/batch", files=files)
    assert response.status_code == 200, response.text
    answers = response.json()["answers"]
    assert [a["file"] for a in answers] == ["a.jpeg", "notes.jpeg", "b.jpeg"]
    assert answers[0]["class"] and answers[0]["probabilities"] == answers[2]["probabilities"]
    assert answers[1]["error"].startswith("notes.jpeg: not a recognised image") and "class" not in answers[1]
    too_many = client.post("/v1/predict/batch", files=[("files", (f"{n}.jpeg", good)) for n in range(33)])
    assert too_many.status_code == 400 and "over the limit of 32" in too_many.json()["error"]


def test_the_openapi_schema_describes_the_answers_and_a_favicon_is_served(client):
    schema = client.get("/openapi.json").json()
    answer = schema["paths"]["/v1/predict"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer["$ref"].endswith("/Answer")
    fields = schema["components"]["schemas"]["Answer"]["properties"]
    assert {"class", "probabilities", "reason", "not_classified", "class_set", "novelty"} <= set(fields)
    assert "/v1/predict/batch" in schema["paths"]
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")
