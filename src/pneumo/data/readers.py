"""Read an X-ray file of any supported format as a grayscale uint8 image.

JPEG, PNG (8/16-bit; gray, RGB, RGBA), BMP and TIFF are decoded with OpenCV, as in the
original study; DICOM with pydicom (modality and VOI LUTs applied, MONOCHROME1 inverted).
Headers are checked before decoding so that a decompression bomb is refused cheaply.
"""

from __future__ import annotations

import io
import stat
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from pneumo.errors import ImageReadError

#: Largest image accepted, in pixels (a 10k x 10k detector image is well inside).
MAX_PIXELS = 100_000_000
#: Largest file read, in bytes: an uncompressed 16-bit 4300 x 3500 DICOM is ~30 MB.
MAX_FILE_BYTES = 256 * 1024 * 1024
SUPPORTED = "JPEG, PNG, BMP, TIFF or DICOM"
_DICOM_SUFFIXES = {".dcm", ".dicom"}


def is_dicom(data: bytes, name: str = "") -> bool:
    """True when the bytes carry the DICOM preamble or the name has a DICOM suffix."""
    return data[128:132] == b"DICM" or Path(name).suffix.lower() in _DICOM_SUFFIXES


def read_gray(path: str | Path) -> np.ndarray:
    """Read one file as a 2-D uint8 grayscale image at its own size.

    Raises:
        ImageReadError: the file is missing, empty, of an unsupported type, truncated,
            too large, or cannot be decoded; the message names the file and the reason.
    """
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except OSError as error:
        raise ImageReadError(path, f"cannot be read ({error.strerror or error})") from None
    # Only regular files: reading a pipe can block forever and a device (/dev/zero) never ends.
    if not stat.S_ISREG(info.st_mode):
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file (a pipe, device or socket)"
        raise ImageReadError(path, f"{kind}; pass image files", status=415)
    if info.st_size > MAX_FILE_BYTES:
        raise ImageReadError(path, f"file is {info.st_size:,} bytes, over the limit of {MAX_FILE_BYTES:,}", status=413)
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)  # bounded even if the file grows meanwhile
    except OSError as error:
        raise ImageReadError(path, f"cannot be read ({error.strerror or error})") from None
    if len(data) > MAX_FILE_BYTES:
        raise ImageReadError(path, f"file grew over the limit of {MAX_FILE_BYTES:,} bytes while being read", status=413)
    return decode_gray(data, str(path))


def decode_gray(data: bytes, name: str) -> np.ndarray:
    """Decode image bytes (``name`` is used for messages and the DICOM suffix) to uint8 (H, W)."""
    if not data:
        raise ImageReadError(name, "file is empty (0 bytes)")
    if is_dicom(data, name):
        return _decode_dicom(data, name)
    probe(data, name)
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None or array.size == 0:
        raise ImageReadError(name, "image data could not be decoded (corrupt file?)")
    return to_gray_uint8(array, name)


def probe(data: bytes, name: str) -> tuple[int, int]:
    """Check that bytes are a supported, complete, not oversized image without decoding it.

    Returns:
        (width, height) read from the header.

    Raises:
        ImageReadError: empty, not an image, unsupported type, oversized or truncated.
    """
    if not data:
        raise ImageReadError(name, "file is empty (0 bytes)")
    if is_dicom(data, name):
        return _probe_dicom(data, name)[1:]
    try:
        with Image.open(io.BytesIO(data)) as header:  # reads the header only
            width, height = header.size
            kind = header.format
    except UnidentifiedImageError:
        raise ImageReadError(name, f"not a recognised image (expected {SUPPORTED})", status=415) from None
    except Image.DecompressionBombError:
        raise ImageReadError(name, f"image is too large (over the limit of {MAX_PIXELS:,} pixels)", status=413) from None
    except Exception as error:  # PIL raises many types for broken headers
        raise ImageReadError(name, f"broken image header ({error})") from None
    if width * height > MAX_PIXELS:
        raise ImageReadError(
            name, f"image is {width}x{height} = {width * height:,} pixels, over the limit of {MAX_PIXELS:,}", status=413
        )
    if kind not in {"JPEG", "PNG", "BMP", "TIFF", "MPO"}:
        raise ImageReadError(name, f"{kind} images are not supported (expected {SUPPORTED})", status=415)
    if kind in {"JPEG", "MPO"} and not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        # libjpeg decodes a truncated JPEG into a half-grey image with only a warning.
        raise ImageReadError(name, "truncated JPEG (the end-of-image marker is missing)")
    return width, height


def to_gray_uint8(array: np.ndarray, name: str = "image") -> np.ndarray:
    """Convert a decoded OpenCV array (gray, BGR or BGRA; any depth) to uint8 grayscale."""
    if array.ndim == 3:
        channels = array.shape[2]
        if channels == 1:
            array = array[:, :, 0]
        elif channels in (3, 4):
            code = cv2.COLOR_BGR2GRAY if channels == 3 else cv2.COLOR_BGRA2GRAY
            array = cv2.cvtColor(array, code)
        else:
            raise ImageReadError(name, f"unsupported number of channels: {channels}")
    elif array.ndim != 2:
        raise ImageReadError(name, f"unsupported image shape {array.shape}")
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        return (array.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    return _rescale_to_uint8(array.astype(np.float64))


def _rescale_to_uint8(array: np.ndarray) -> np.ndarray:
    low, high = float(np.min(array)), float(np.max(array))
    if high <= low:
        return np.zeros(array.shape, np.uint8)
    return np.round((array - low) * (255.0 / (high - low))).astype(np.uint8)


def _probe_dicom(data: bytes, name: str):
    """Parse a DICOM file; returns (dataset, columns, rows) after the size check."""
    import pydicom

    try:
        dataset = pydicom.dcmread(io.BytesIO(data), force=True)
        rows, columns = int(dataset.Rows), int(dataset.Columns)
    except Exception as error:  # pydicom raises many types for non-DICOM bytes
        raise ImageReadError(name, f"not a readable DICOM image ({type(error).__name__}: {error})") from None
    if rows * columns > MAX_PIXELS:
        raise ImageReadError(name, f"DICOM image is {columns}x{rows}, over the limit of {MAX_PIXELS:,} pixels", status=413)
    return dataset, columns, rows


def _decode_dicom(data: bytes, name: str) -> np.ndarray:
    try:
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:  # pydicom < 3
        from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi_lut

    dataset = _probe_dicom(data, name)[0]
    try:
        pixels = dataset.pixel_array
    except Exception as error:  # missing pixel data, unsupported transfer syntax, ...
        raise ImageReadError(name, f"DICOM pixel data cannot be decoded ({error})") from None
    if pixels.ndim == 3 and getattr(dataset, "SamplesPerPixel", 1) == 1:
        pixels = pixels[0]  # multi-frame: take the first frame
    photometric = str(getattr(dataset, "PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric.startswith("MONOCHROME"):
        pixels = apply_voi_lut(apply_modality_lut(pixels, dataset), dataset)
        image = _rescale_to_uint8(np.asarray(pixels, np.float64))
        if photometric == "MONOCHROME1":  # low values are white: invert to the usual look
            image = 255 - image
        return image
    if pixels.ndim == 3 and pixels.shape[2] == 3:
        return to_gray_uint8(cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_RGB2BGR), name)
    raise ImageReadError(name, f"unsupported DICOM photometric interpretation {photometric}", status=415)


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """Resize to size x size like the study (aspect ratio not kept); INTER_AREA when shrinking."""
    height, width = image.shape
    interpolation = cv2.INTER_AREA if size <= min(height, width) else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interpolation)


def load_for_model(path: str | Path, size: int) -> np.ndarray:
    """Read and resize one file: the preprocessing every model input goes through."""
    return resize(read_gray(path), size)
