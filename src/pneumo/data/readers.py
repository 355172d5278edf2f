"""Read an X-ray file of any supported format as a grayscale uint8 image.

JPEG, PNG (8/16-bit; gray, RGB, RGBA), BMP and TIFF are decoded with OpenCV, as in the
original study; DICOM with pydicom (modality and VOI LUTs applied, MONOCHROME1 inverted).
Headers are checked before decoding so that a decompression bomb is refused cheaply: the
pixel count and the decoded size (width x height x channels x bytes per sample) must be within
limits sized for real chest X-rays, and deflated DICOM, which inflates without a bound before
its header can be read, is refused. A nearly uniform image (a blank page, an empty bomb) is
refused after decoding: there is nothing in it to classify.
"""

from __future__ import annotations

import io
import stat
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from pneumo.text import printable
from pneumo.errors import ImageReadError

#: Largest image accepted, in pixels (a 10k x 10k detector image is well inside).
MAX_PIXELS = 100_000_000
#: Largest file read, in bytes: an uncompressed 16-bit 4300 x 3500 DICOM is ~30 MB.
MAX_FILE_BYTES = 256 * 1024 * 1024
#: Largest decoded image, in bytes (width x height x channels x bytes per sample): the largest
#: CR/DX detectors give ~4300 x 3500 x 16 bit = 30 MB, an 8-bit RGB export of them 45 MB.
MAX_DECODED_BYTES = 64 * 1024 * 1024
#: Smallest standard deviation, in grey levels of the 8-bit image, of an image worth classifying.
MIN_STD = 2.0
#: Most scans of a JPEG (progressive JPEGs from cameras and PACS have about ten).
MAX_JPEG_SCANS = 100
DEFLATED_DICOM = "1.2.840.10008.1.2.1.99"
#: Most reads pydicom may make while parsing one DICOM file. A chest X-ray's few hundred data elements take about a
#: thousand (and a 256 MB encapsulated image 32,000 more, read in 8 KB chunks); a file of millions of tiny elements
#: or sequence items, a parsing bomb of a few MB that would take minutes and gigabytes, stops here.
MAX_DICOM_READS = 100_000
#: Largest sequence of defined length, in bytes (pydicom parses those only when they are used). The largest real
#: ones are LUT sequences: a 16-bit LUT of 65,536 entries is 128 KB.
MAX_SEQUENCE_BYTES = 1024 * 1024
# Decoded bytes per pixel of the PIL header modes, as OpenCV decodes them (a palette becomes BGR).
_MODE_BYTES = {"1": 1, "L": 1, "P": 3, "PA": 4, "LA": 2, "RGB": 3, "RGBA": 4, "RGBX": 4, "CMYK": 4, "YCbCr": 3,
               "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2, "I": 4, "F": 4}
SUPPORTED = "JPEG, PNG, BMP, TIFF or DICOM"
_DICOM_SUFFIXES = {".dcm", ".dicom"}


#: DICOM attributes reported with a prediction (they say whose image it is and what kind).
DICOM_FIELDS = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "Modality", "ViewPosition",
                "PatientAge", "BodyPartExamined")
# Mean difference between colour channels (8-bit levels) above which an image counts as a colour picture.
COLOUR_DIFFERENCE = 6.0


@dataclass
class ImageInfo:
    """What a file says about itself beyond its grey pixels, for the input checks and the output."""

    width: int
    height: int
    colour: bool = False  # a colour picture (channels that differ), not a grey image stored as RGB
    dicom: dict[str, str] = field(default_factory=dict)  # DICOM_FIELDS present in the file


def is_dicom(data: bytes, name: str = "") -> bool:
    """True when the bytes carry the DICOM preamble or the name has a DICOM suffix."""
    return data[128:132] == b"DICM" or Path(name).suffix.lower() in _DICOM_SUFFIXES


def read_gray(path: str | Path, *, max_decoded_bytes: int | None = None) -> np.ndarray:
    """Read one file as a 2-D uint8 grayscale image at its own size (see ``read_image``)."""
    return read_image(path, max_decoded_bytes=max_decoded_bytes)[0]


def read_image(path: str | Path, *, max_decoded_bytes: int | None = None) -> tuple[np.ndarray, ImageInfo]:
    """Read one file as a 2-D uint8 grayscale image at its own size, with what the file says about itself.

    ``max_decoded_bytes`` overrides MAX_DECODED_BYTES.

    Raises:
        ImageReadError: the file is missing, empty, of an unsupported type, truncated,
            too large, or cannot be decoded; the message names the file and the reason.
    """
    return decode_image(read_bytes(path), str(path), max_decoded_bytes=max_decoded_bytes)


def read_bytes(path: str | Path) -> bytes:
    """The bytes of one regular file up to MAX_FILE_BYTES; raises ImageReadError naming the file and the reason."""
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
    return data


def decode_gray(data: bytes, name: str, *, max_decoded_bytes: int | None = None) -> np.ndarray:
    """Decode image bytes to uint8 (H, W) (see ``decode_image``)."""
    return decode_image(data, name, max_decoded_bytes=max_decoded_bytes)[0]


def decode_image(data: bytes, name: str, *, max_decoded_bytes: int | None = None) -> tuple[np.ndarray, ImageInfo]:
    """Decode image bytes (``name`` is used for messages and the DICOM suffix) to uint8 (H, W) and its ImageInfo.

    ``max_decoded_bytes`` overrides MAX_DECODED_BYTES.
    """
    if not data:
        raise ImageReadError(name, "file is empty (0 bytes)")
    if is_dicom(data, name):
        image, info = _decode_dicom(data, name, max_decoded_bytes)
    else:
        probe(data, name, max_decoded_bytes=max_decoded_bytes)
        array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if array is None or array.size == 0:
            raise ImageReadError(name, "image data could not be decoded (corrupt file?)")
        image = to_gray_uint8(array, name)
        info = ImageInfo(image.shape[1], image.shape[0], colour=is_colour(array))
    check_not_blank(image, name)
    return image, info


def check_not_blank(image: np.ndarray, name: str) -> None:
    """Refuse a nearly uniform uint8 image (a blank page, an empty decompression bomb): nothing to classify."""
    spread = float(cv2.meanStdDev(image)[1][0, 0])
    if spread < MIN_STD:
        raise ImageReadError(name, f"image is nearly uniform (standard deviation {spread:.2f} grey levels, under "
                                   f"{MIN_STD:g}): there is no X-ray in it to classify")


def is_colour(array: np.ndarray) -> bool:
    """True for a picture whose colour channels differ (BGR or BGRA as OpenCV decodes), on a subsample."""
    if array.ndim != 3 or array.shape[2] < 3:
        return False
    step = max(1, min(array.shape[:2]) // 256)
    sample = array[::step, ::step, :3].astype(np.float32)
    if array.dtype == np.uint16:
        sample /= 257
    elif array.dtype != np.uint8:  # floats of any range: judged on the 0-255 scale of their own range
        low, high = float(sample.min()), float(sample.max())
        sample = (sample - low) * (255 / (high - low)) if high > low else sample * 0
    difference = np.abs(sample[..., 0] - sample[..., 1]).mean() + np.abs(sample[..., 1] - sample[..., 2]).mean()
    return bool(difference > COLOUR_DIFFERENCE)


def _check_decoded_size(name: str, width: int, height: int, per_pixel: int, limit: int | None, what: str) -> None:
    limit = MAX_DECODED_BYTES if limit is None else limit
    if width * height > MAX_PIXELS:
        raise ImageReadError(
            name, f"image is {width}x{height} = {width * height:,} pixels, over the limit of {MAX_PIXELS:,}", status=413)
    if width * height * per_pixel > limit:
        raise ImageReadError(name, f"image would take {width * height * per_pixel:,} bytes decoded ({width}x{height}, "
                                   f"{what}), over the limit of {limit:,}", status=413)


def _bytes_per_pixel(header: Image.Image, data: bytes) -> int:
    """Decoded bytes per pixel of an image whose header PIL has read (16-bit PNG and TIFF counted as such)."""
    per_pixel = _MODE_BYTES.get(header.mode, 4)
    if header.format == "PNG" and len(data) > 25 and data[24] == 16:  # IHDR bit depth: PIL reports 8-bit modes
        per_pixel = {"L": 2, "I;16": 2, "LA": 4, "RGB": 6, "RGBA": 8}.get(header.mode, 2 * per_pixel)
    if header.format == "TIFF":
        bits = header.tag_v2.get(258, (8,))
        samples = int(header.tag_v2.get(277, 1))
        per_pixel = max(per_pixel, samples * -(-max(bits if isinstance(bits, tuple) else (bits,)) // 8))
    return per_pixel


def probe(data: bytes, name: str, *, max_decoded_bytes: int | None = None) -> tuple[int, int]:
    """Check that bytes are a supported, complete, not oversized image without decoding it.

    Returns:
        (width, height) read from the header.

    Raises:
        ImageReadError: empty, not an image, unsupported type, oversized (in pixels or decoded
            bytes) or truncated.
    """
    if not data:
        raise ImageReadError(name, "file is empty (0 bytes)")
    if is_dicom(data, name):
        return _probe_dicom(data, name, max_decoded_bytes)[1:]
    try:
        with Image.open(io.BytesIO(data)) as header:  # reads the header only
            width, height = header.size
            kind = header.format
            per_pixel = _bytes_per_pixel(header, data)
            mode = header.mode
    except UnidentifiedImageError:
        raise ImageReadError(name, f"not a recognised image (expected {SUPPORTED})", status=415) from None
    except Image.DecompressionBombError:
        raise ImageReadError(name, f"image is too large (over the limit of {MAX_PIXELS:,} pixels)", status=413) from None
    except Exception as error:  # PIL raises many types for broken headers
        raise ImageReadError(name, f"broken image header ({error})") from None
    _check_decoded_size(name, width, height, per_pixel, max_decoded_bytes, f"{kind} {mode}, {per_pixel} bytes a pixel")
    if kind not in {"JPEG", "PNG", "BMP", "TIFF", "MPO"}:
        raise ImageReadError(name, f"{kind} images are not supported (expected {SUPPORTED})", status=415)
    if kind in {"JPEG", "MPO"} and not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        # libjpeg decodes a truncated JPEG into a half-grey image with only a warning.
        raise ImageReadError(name, "truncated JPEG (the end-of-image marker is missing)")
    if kind in {"JPEG", "MPO"}:
        _check_scans(data, name)
    if kind == "TIFF":
        _check_tiles(data, name, width, height, per_pixel, max_decoded_bytes)
    return width, height


def _check_scans(data: bytes, name: str) -> None:
    """Refuse a JPEG with more scans than any camera or X-ray export writes: each scan of a progressive JPEG is a
    pass over the whole image, and thousands of them make a small file cost minutes of CPU (libjpeg-turbo's
    djpeg offers -maxscans for this). Start-of-scan markers cannot appear inside entropy-coded data, where
    every 0xFF byte is followed by 0x00, so counting them needs no decoding."""
    scans = data.count(b"\xff\xda")
    if scans > MAX_JPEG_SCANS:
        raise ImageReadError(name, f"JPEG with {scans:,} scans, over the limit of {MAX_JPEG_SCANS} (a progressive "
                                   "JPEG has about ten): decoding it would take minutes", status=413)


def _check_tiles(data: bytes, name: str, width: int, height: int, per_pixel: int, limit: int | None) -> None:
    """Refuse a TIFF whose tiles would decode past the limits: a decoder inflates each tile whole, at the size the
    tile tags give, before cropping it to the image."""
    with Image.open(io.BytesIO(data)) as header:
        tile_width, tile_length = header.tag_v2.get(322), header.tag_v2.get(323)  # TileWidth, TileLength
    if tile_width is not None and tile_length is not None:
        _check_decoded_size(name, int(tile_width), int(tile_length), per_pixel, limit,
                            f"one TIFF tile of a {width}x{height} image")


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


def _transfer_syntax(data: bytes) -> str:
    """The transfer syntax UID in a DICOM file's meta header, read without touching the dataset after it."""
    import pydicom.filereader

    stream = io.BytesIO(data)
    try:
        pydicom.filereader.read_preamble(stream, True)
        # Private in pydicom, but the only reader of the meta group alone from a stream: dcmread
        # would inflate a deflated dataset in full before anything could be checked.
        meta = pydicom.filereader._read_file_meta_info(stream)
    except Exception:  # no meta header: pydicom reads the rest as uncompressed, which is bounded by the file
        return ""
    return str(meta.get("TransferSyntaxUID", ""))


def _probe_dicom(data: bytes, name: str, max_decoded_bytes: int | None = None):
    """Parse a DICOM file; returns (dataset, columns, rows) after the size checks."""
    import pydicom

    if _transfer_syntax(data) == DEFLATED_DICOM:
        raise ImageReadError(name, "deflated DICOM (transfer syntax 1.2.840.10008.1.2.1.99) is not accepted: it "
                                   "inflates without a bound before it can be checked; convert it to an uncompressed "
                                   "or JPEG transfer syntax (e.g. dcmconv +te)", status=415)
    try:
        dataset = pydicom.dcmread(_ReadBudget(data, name), force=True)
        _check_sequences(dataset, name)
    except ImageReadError:
        raise
    except Exception as error:  # pydicom raises many types for non-DICOM bytes
        raise ImageReadError(name, f"not a readable DICOM file ({type(error).__name__}: {error})") from None
    if "PixelData" not in dataset:
        described = dataset.get("Modality") or getattr(dataset.get("SOPClassUID"), "name", "")
        if not described:
            raise ImageReadError(name, "not a readable DICOM image (no image or DICOM object description in it)")
        raise ImageReadError(name, f"a DICOM {printable(str(described))} object without an image (a plan, report or "
                                   "presentation state, say): nothing to classify", status=415)
    try:
        rows, columns = int(dataset.Rows), int(dataset.Columns)
        samples = int(getattr(dataset, "SamplesPerPixel", 1) or 1)
        bits = int(getattr(dataset, "BitsAllocated", 16) or 16)
        frames = int(getattr(dataset, "NumberOfFrames", 1) or 1)
    except Exception as error:  # pydicom raises many types for non-DICOM bytes
        raise ImageReadError(name, f"not a readable DICOM image ({type(error).__name__}: {error})") from None
    _check_decoded_size(name, columns, rows * frames, samples * -(-bits // 8), max_decoded_bytes,
                        f"DICOM, {frames} frame(s) of {samples} x {bits} bits")
    if frames > 1:
        raise ImageReadError(name, f"a multi-frame DICOM ({frames} frames: a series or cine loop, not one radiograph); "
                                   "pneumo classifies single images: export the frame to classify on its own",
                             status=415)
    if getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None) is not None \
            and dataset.file_meta.TransferSyntaxUID.is_encapsulated:
        _check_frames(dataset, name, columns, rows, samples * -(-bits // 8))
    return dataset, columns, rows


class _ReadBudget(io.BytesIO):
    """The file's bytes as a stream that refuses to be read more than MAX_DICOM_READS times.

    Every data element and sequence item pydicom parses costs at least one read, so this bounds the time and memory
    of parsing whatever the file holds, before any object is built for it.
    """

    def __init__(self, data: bytes, name: str) -> None:
        super().__init__(data)
        self.name = name
        self.reads_left = MAX_DICOM_READS

    def read(self, size: int | None = -1) -> bytes:
        self.reads_left -= 1
        if self.reads_left < 0:
            raise ImageReadError(self.name, f"more than {MAX_DICOM_READS:,} reads to parse its data elements: far "
                                            "more elements or sequence items than any X-ray has; refused", status=413)
        return super().read(size)


def _check_sequences(dataset, name: str) -> None:
    """Refuse sequences of defined length over MAX_SEQUENCE_BYTES, at any depth, without parsing them.

    pydicom keeps such a sequence as raw bytes until it is used, outside the read budget; sequences of undefined
    length were parsed while reading, within it, and their items are searched the same way.
    """
    from pydicom.datadict import dictionary_VR
    from pydicom.dataelem import RawDataElement

    for tag in dataset.keys():
        element = dataset.get_item(tag)
        if isinstance(element, RawDataElement):
            try:  # implicit VR files name no VR: the dictionary's, as pydicom will use when it parses the element
                vr = element.VR or dictionary_VR(tag)
            except KeyError:  # a private tag: parsed as bytes (UN), never as a sequence
                continue
            if vr == "SQ" and element.length != 0xFFFFFFFF and element.length > MAX_SEQUENCE_BYTES:
                raise ImageReadError(name, f"a sequence of {element.length:,} bytes in element {element.tag}, over "
                                           f"the limit of {MAX_SEQUENCE_BYTES:,}; refused before parsing it", status=413)
        elif element.VR == "SQ":
            for item in element.value:
                _check_sequences(item, name)


def _check_frames(dataset, name: str, columns: int, rows: int, per_pixel: int) -> None:
    """Refuse compressed DICOM frames that would decode to more than the image the file describes.

    A codec decodes a frame at the size its own header gives, whatever Rows and Columns say: a 64x64 DICOM can
    hold a 30000x30000 JPEG frame of a few hundred bytes. Each frame's own header (JPEG and JPEG-LS SOF, JPEG 2000
    SIZ) is read before anything is decoded, and a frame far larger than the raw image it stands for (an RLE
    segment bomb) is refused as well.
    """
    from pydicom.encaps import generate_frames

    raw = rows * columns * per_pixel
    try:
        frames = generate_frames(dataset.PixelData, number_of_frames=int(getattr(dataset, "NumberOfFrames", 1) or 1))
        for frame in frames:
            if len(frame) > 2 * raw + 1024:  # compression that makes data larger than raw is not compression
                raise ImageReadError(name, f"a compressed frame of {len(frame):,} bytes for a {columns}x{rows} image "
                                           f"({raw:,} bytes raw): refused before decoding", status=413)
            size = codestream_size(frame)
            if size is not None and (size[0] > columns or size[1] > rows):
                raise ImageReadError(name, f"a compressed frame of {size[0]}x{size[1]} pixels in a {columns}x{rows} "
                                           "DICOM image: refused before decoding", status=413)
            if frame[:2] == b"\xff\xd8":
                _check_scans(frame, name)
    except ImageReadError:
        raise
    except Exception as error:  # pydicom's own complaints about the encapsulation itself
        raise ImageReadError(name, f"DICOM pixel data cannot be decoded ({type(error).__name__}: {error})") from None


def codestream_size(frame: bytes) -> tuple[int, int] | None:
    """(width, height) from a compressed frame's own header: a JPEG or JPEG-LS start-of-frame, or a JPEG 2000 SIZ
    marker; None when the frame is none of these (RLE has no size of its own).

    Raises:
        ValueError: a JPEG-family frame without a start-of-frame before its first scan (a decoder would guess).
    """
    if frame[:2] == b"\xff\xd8":  # JPEG family: walk the markers to the first start-of-frame
        position = 2
        while position + 4 <= len(frame):
            if frame[position] != 0xFF:  # junk between segments: decoders skip to the next marker, and so do we
                position += 1
                continue
            marker = frame[position + 1]
            if marker == 0xFF:  # fill byte
                position += 1
                continue
            # SOF0-SOF15 except DHT (C4), JPG (C8) and DAC (CC); F7 is JPEG-LS's SOF55.
            if ((0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC)) or marker == 0xF7) \
                    and position + 9 <= len(frame):
                height = int.from_bytes(frame[position + 5:position + 7], "big")
                width = int.from_bytes(frame[position + 7:position + 9], "big")
                return width, height
            if marker in (0xDA, 0xD9):  # a scan, or the end, before any frame header
                break
            position += 2 + int.from_bytes(frame[position + 2:position + 4], "big")
        raise ValueError("a JPEG frame without a start-of-frame header before its data")
    if frame[:4] == b"\xff\x4f\xff\x51":  # a raw JPEG 2000 codestream: SOC, then SIZ
        siz = 2
    elif frame[4:8] == b"jP  " and (box := frame.find(b"jp2c")) >= 0 and frame[box + 4:box + 8] == b"\xff\x4f\xff\x51":
        siz = box + 6  # JP2 file format: the codestream sits in its jp2c box
    else:
        return None
    if siz + 22 > len(frame):
        raise ValueError("a JPEG 2000 frame whose SIZ header is cut short")
    # SIZ: marker (2), Lsiz (2), Rsiz (2), Xsiz, Ysiz, XOsiz, YOsiz (4 each).
    width = int.from_bytes(frame[siz + 6:siz + 10], "big") - int.from_bytes(frame[siz + 14:siz + 18], "big")
    height = int.from_bytes(frame[siz + 10:siz + 14], "big") - int.from_bytes(frame[siz + 18:siz + 22], "big")
    return width, height


def _decode_dicom(data: bytes, name: str, max_decoded_bytes: int | None = None) -> tuple[np.ndarray, ImageInfo]:
    dataset = _probe_dicom(data, name, max_decoded_bytes)[0]
    # Values as text a terminal, a page or a spreadsheet can show: control characters replaced at the source.
    described = {key: printable(str(dataset.get(key))) for key in DICOM_FIELDS if dataset.get(key) not in (None, "")}
    try:
        pixels = dataset.pixel_array
    except Exception as error:  # missing pixel data, unsupported transfer syntax, ...
        raise ImageReadError(name, f"DICOM pixel data cannot be decoded ({type(error).__name__}: {error})"
                                   f"{_decoder_hint(dataset)}") from None
    try:
        image, colour = _dicom_picture(pixels, dataset, name)
    except ImageReadError:
        raise
    except Exception as error:  # a window, LUT or shape the file describes wrongly: this file's problem only
        raise ImageReadError(name, f"DICOM display attributes cannot be applied ({type(error).__name__}: {error}); "
                                   "the file's window, LUT or pixel description is inconsistent") from None
    return image, ImageInfo(image.shape[1], image.shape[0], colour=colour, dicom=described)


def _decoder_hint(dataset) -> str:
    """What to install for a transfer syntax pneumo's default decoders cannot read, if anything."""
    if str(getattr(dataset.file_meta, "TransferSyntaxUID", "")) != "1.2.840.10008.1.2.4.51":
        return ""
    try:
        import libjpeg  # noqa: F401  (pylibjpeg-libjpeg, the GPL decoder of 12-bit JPEG Extended)
    except ImportError:
        return "; 12-bit JPEG Extended needs pylibjpeg-libjpeg (GPL-3.0): pip install 'pneumo[dicom-gpl]'"
    return "; pylibjpeg-libjpeg is installed and could not decode it either: the JPEG data itself is damaged"


def _dicom_picture(pixels: np.ndarray, dataset, name: str) -> tuple[np.ndarray, bool]:
    """(the 8-bit grey picture, whether the file was in colour) of a DICOM's decoded pixels."""
    samples = int(getattr(dataset, "SamplesPerPixel", 1) or 1)
    photometric = str(getattr(dataset, "PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric.startswith("MONOCHROME"):
        if pixels.ndim != 2:
            raise ImageReadError(name, f"{photometric} image with {samples} samples per pixel: a grey image has one; "
                                       "the file describes its pixels inconsistently")
        image = dicom_display(pixels, dataset)
        return (255 - image if photometric == "MONOCHROME1" else image), False  # MONOCHROME1: low values white
    if pixels.ndim == 3 and pixels.shape[2] == 3:
        bgr = cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_RGB2BGR)
        return to_gray_uint8(bgr, name), is_colour(bgr)
    raise ImageReadError(name, f"unsupported DICOM photometric interpretation {photometric}", status=415)


def _first(value) -> float:
    """The first of a DICOM attribute's values (window centre and width may hold several)."""
    from pydicom.multival import MultiValue

    return float(value[0]) if isinstance(value, MultiValue) else float(value)


def dicom_display(pixels: np.ndarray, dataset) -> np.ndarray:
    """Stored DICOM values -> the 8-bit picture a viewer (or a JPEG export) shows.

    The modality LUT (rescale slope/intercept) first, then the file's own display choice: its
    VOI LUT, or its first window (linear, DICOM PS3.3 C.11.2.1.2) mapped to 0-255. A file
    without either is shown as stored when its values fit 8 bits (an 8-bit export stays exactly
    itself), else stretched from its minimum to its maximum, as viewers do by default.
    """
    try:
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:  # pydicom < 3
        from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi_lut

    values = np.asarray(apply_modality_lut(pixels, dataset), np.float64)
    if "VOILUTSequence" in dataset:
        lut = dataset.VOILUTSequence[0]
        top = 2 ** int(lut.LUTDescriptor[2]) - 1
        shown = np.asarray(apply_voi_lut(values, dataset), np.float64)  # the LUT takes modality-LUT output
        return np.clip(np.round(shown * 255 / top), 0, 255).astype(np.uint8)
    if "WindowCenter" in dataset and "WindowWidth" in dataset:
        center, width = _first(dataset.WindowCenter), _first(dataset.WindowWidth)
        if width >= 1:
            shown = ((values - (center - 0.5)) / max(width - 1, 1) + 0.5) * 255
            return np.clip(np.round(shown), 0, 255).astype(np.uint8)
    if values.min() >= 0 and values.max() <= 255 and int(getattr(dataset, "BitsStored", 16)) <= 8:
        return values.astype(np.uint8)
    return _rescale_to_uint8(values)


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """Resize to size x size like the study (aspect ratio not kept); INTER_AREA when shrinking."""
    height, width = image.shape
    interpolation = cv2.INTER_AREA if size <= min(height, width) else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interpolation)


def load_for_model(path: str | Path, size: int) -> np.ndarray:
    """Read and resize one file: the preprocessing every model input goes through."""
    return resize(read_gray(path), size)
