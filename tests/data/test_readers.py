from pathlib import Path

import cv2
import numpy as np
import pytest

from pneumo.data.readers import MAX_PIXELS, decode_gray, load_for_model, probe, read_gray
from pneumo.errors import ImageReadError
from tests.conftest import dicom_bytes, jpeg_bytes, png_with_size, xray_like


def test_jpeg_is_read_as_gray_uint8(tmp_path):
    path = tmp_path / "a.jpeg"
    path.write_bytes(jpeg_bytes(xray_like(0, 80)))
    image = read_gray(path)
    assert image.dtype == np.uint8 and image.shape == (80, 80)
    assert abs(float(image.mean()) - float(xray_like(0, 80).mean())) < 2


def test_rgb_jpeg_becomes_gray(tmp_path):
    color = np.zeros((40, 60, 3), np.uint8)
    color[:, :40, 2] = 200  # red in BGR; the rest black
    path = tmp_path / "rgb.jpg"
    path.write_bytes(cv2.imencode(".jpg", color)[1].tobytes())
    image = read_gray(path)
    assert image.shape == (40, 60)
    # OpenCV's gray weights: 0.299 R -> about 60
    assert 55 <= int(np.median(image[:, :30])) <= 65


def test_16_bit_png_is_scaled_to_8_bit(tmp_path):
    pixels = np.full((32, 48), 65535, np.uint16)
    pixels[:, :24] = 257 * 100  # exactly 100 after /257
    path = tmp_path / "deep.png"
    cv2.imwrite(str(path), pixels)
    image = read_gray(path)
    assert image.dtype == np.uint8
    assert image[0, 0] == 100 and image[0, -1] == 255


def test_rgba_png_drops_alpha(tmp_path):
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[:, :10, :3] = 90
    rgba[..., 3] = 10  # nearly transparent: alpha must not darken the image
    path = tmp_path / "rgba.png"
    cv2.imwrite(str(path), rgba)
    assert int(read_gray(path)[5, 5]) == 90


@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
def test_dicom_monochrome(tmp_path, photometric):
    pixels = np.zeros((16, 16), np.uint16)
    pixels[:, 8:] = 4000  # right half bright in stored values
    path = tmp_path / "x.dcm"
    path.write_bytes(dicom_bytes(pixels, photometric))
    image = read_gray(path)
    left, right = int(image[0, 0]), int(image[0, -1])
    if photometric == "MONOCHROME2":
        assert (left, right) == (0, 255)
    else:  # MONOCHROME1: high values are dark, so they are inverted to the usual look
        assert (left, right) == (255, 0)


def test_dicom_without_suffix_is_recognised_by_preamble(tmp_path):
    path = tmp_path / "scan"
    path.write_bytes(dicom_bytes(np.arange(8 * 8).reshape(8, 8)))
    assert read_gray(path).shape == (8, 8)


def test_truncated_jpeg_is_refused(tmp_path):
    path = tmp_path / "cut.jpeg"
    path.write_bytes(jpeg_bytes(xray_like(1, 128))[:600])
    with pytest.raises(ImageReadError, match=r"cut\.jpeg: truncated JPEG"):
        read_gray(path)


def test_text_file_named_jpeg_is_refused_with_415(tmp_path):
    path = tmp_path / "notes.jpeg"
    path.write_text("this is not an image")
    with pytest.raises(ImageReadError, match=r"notes\.jpeg: not a recognised image") as caught:
        read_gray(path)
    assert caught.value.status == 415


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"empty\.png: file is empty \(0 bytes\)"):
        read_gray(path)


def test_missing_file(tmp_path):
    with pytest.raises(ImageReadError, match="file not found"):
        read_gray(tmp_path / "nope.png")


def test_decompression_bomb_is_refused_from_the_header():
    data = png_with_size(50_000, 50_000)
    assert len(data) < 200  # nothing big is ever allocated
    with pytest.raises(ImageReadError, match=r"over the limit of") as caught:
        decode_gray(data, "bomb.png")
    assert caught.value.status == 413
    assert 50_000 * 50_000 > MAX_PIXELS


def test_probe_reports_size_without_decoding():
    assert probe(jpeg_bytes(xray_like(0, 64)), "a.jpeg") == (64, 64)


@pytest.mark.parametrize("size", [128, 224])
def test_load_for_model_resizes(tmp_path, size):
    path = tmp_path / "a.jpeg"
    path.write_bytes(jpeg_bytes(xray_like(0, 200)))
    assert load_for_model(path, size).shape == (size, size)


def test_pipes_devices_and_folders_are_refused_without_reading(tmp_path):
    import os

    from pneumo.data.readers import read_gray

    pipe = tmp_path / "pipe.jpeg"
    os.mkfifo(pipe)  # reading it would block forever: nobody writes
    with pytest.raises(ImageReadError, match=r"pipe.jpeg: not a regular file \(a pipe, device or socket\)"):
        read_gray(pipe)
    with pytest.raises(ImageReadError, match=r"/dev/zero: not a regular file"):
        read_gray("/dev/zero")
    with pytest.raises(ImageReadError, match="a folder; pass image files"):
        read_gray(tmp_path)


def test_files_over_the_size_limit_are_refused_before_reading(tmp_path, monkeypatch):
    from pneumo.data import readers

    big = tmp_path / "big.jpeg"
    big.write_bytes(b"\xff\xd8" + b"\x00" * 2000)
    monkeypatch.setattr(readers, "MAX_FILE_BYTES", 1000)
    with pytest.raises(ImageReadError, match=r"big.jpeg: file is 2,002 bytes, over the limit of 1,000") as caught:
        readers.read_gray(big)
    assert caught.value.status == 413


def test_decoded_size_is_checked_from_the_header_before_decoding():
    """A 10000 x 10000 16-bit RGBA PNG is within the pixel limit but would decode to 800 MB."""
    data = png_with_size(10_000, 10_000, bit_depth=16, colour_type=6)
    with pytest.raises(ImageReadError, match=r"bomb.png: image would take 800,000,000 bytes decoded \(10000x10000, "
                                             r"PNG RGBA, 8 bytes a pixel\), over the limit of 67,108,864") as caught:
        decode_gray(data, "bomb.png")
    assert caught.value.status == 413
    # A real detector image (4300 x 3500, 16-bit gray) fits.
    assert probe(png_with_size(4300, 3500, bit_depth=16), "cr.png") == (4300, 3500)


def test_the_decoded_size_limit_can_be_set_per_call():
    data = jpeg_bytes(xray_like(0, 200))
    with pytest.raises(ImageReadError, match=r"small.jpeg: image would take 40,000 bytes decoded .* over the limit of 1,000"):
        decode_gray(data, "small.jpeg", max_decoded_bytes=1000)
    assert decode_gray(data, "small.jpeg").shape == (200, 200)


def test_deflated_dicom_is_refused_before_it_is_inflated():
    from pydicom.data import get_testdata_file

    data = Path(get_testdata_file("image_dfl.dcm")).read_bytes()  # pydicom's own deflated test file
    with pytest.raises(ImageReadError, match=r"scan.dcm: deflated DICOM \(transfer syntax 1.2.840.10008.1.2.1.99\) is "
                                             "not accepted") as caught:
        decode_gray(data, "scan.dcm")
    assert caught.value.status == 415


def test_a_dicom_whose_frames_are_too_large_is_refused_before_its_pixels_are_read():
    pixels = np.arange(64 * 64).reshape(64, 64)
    with pytest.raises(ImageReadError, match=r"image would take 8,192 bytes decoded \(64x64, DICOM, 1 frame\(s\) of "
                                             r"1 x 16 bits\), over the limit of 4,000"):
        decode_gray(dicom_bytes(pixels), "scan.dcm", max_decoded_bytes=4000)


@pytest.mark.parametrize("value", [0, 255, 128])
def test_nearly_uniform_images_are_refused(value):
    blank = np.full((300, 300), value, np.uint8)
    blank[0, 0] = 255 - value  # one odd pixel: still nothing to classify
    with pytest.raises(ImageReadError, match=r"blank.png: image is nearly uniform \(standard deviation 0.\d\d grey "
                                             "levels, under 2\\): there is no X-ray in it to classify"):
        decode_gray(cv2.imencode(".png", blank)[1].tobytes(), "blank.png")


def test_an_8_bit_dicom_reads_exactly_as_its_png_export():
    """No stretch of values that already fit 8 bits: the DICOM and the PNG of the same pixels are the same image."""
    pixels = xray_like(3, 96)
    pixels[pixels > 200] = 200  # not spanning 0-255: a min-max stretch would change it
    from_dicom = decode_gray(dicom_bytes(pixels, bits=8), "scan.dcm")
    from_png = decode_gray(cv2.imencode(".png", pixels)[1].tobytes(), "scan.png")
    np.testing.assert_array_equal(from_dicom, from_png)


def test_the_dicom_window_is_applied_as_a_viewer_would():
    """Linear window (PS3.3 C.11.2.1.2), centre 2000 and width 1001: 1500 -> 0, 2000 -> 128, 2500 -> 255."""
    pixels = np.array([[1000, 1500, 2000], [2500, 3000, 4000]] * 3, np.uint16)
    image = decode_gray(dicom_bytes(pixels, window=(2000, 1001)), "scan.dcm")
    assert image[:2].tolist() == [[0, 0, 128], [255, 255, 255]]


@pytest.mark.parametrize("name", ["MR_small_jpeg_ls_lossless.dcm", "JPEG2000.dcm", "MR_small_RLE.dcm",
                                  "SC_rgb_jpeg_gdcm.dcm", "JPEGLSNearLossless_16.dcm"])
def test_compressed_dicom_transfer_syntaxes_decode(name):
    """pydicom's own test files: JPEG-LS, JPEG 2000, RLE and baseline JPEG, through the installed decoders."""
    from pydicom.data import get_testdata_file

    image = decode_gray(Path(get_testdata_file(name)).read_bytes(), name)
    assert image.dtype == np.uint8 and image.ndim == 2 and image.std() > 2
