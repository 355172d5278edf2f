"""Shared fixtures: synthetic images and archives made here, the real shared data, tiny trained runs."""

from __future__ import annotations

import io
import os
import shutil
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PNEUMO_DATA", REPO.parent / "shared" / "datasets" / "chest_xray"))
SHARED_WEIGHTS = REPO.parent / "shared" / "weights" / "mobilenet_v2_imagenet.pth"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


# Fixtures that read the shared training split: a test that uses one is an integration test, so that
# ``pytest -m "not integration"`` runs the rest on a machine without the data.
SHARED_FIXTURES = {"shared_data", "shared_images", "shared_weights", "tiny_run", "tiny_run_b"}


def pytest_collection_modifyitems(items):
    for item in items:
        if SHARED_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


def xray_like(seed: int, size: int = 96) -> np.ndarray:
    """A gray uint8 image with some structure (so JPEG and resizing have work to do)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    image = 120 + 80 * np.sin(6 * x + seed) * np.cos(4 * y) + rng.normal(0, 10, (size, size))
    return np.clip(image, 0, 255).astype(np.uint8)


def jpeg_bytes(image: np.ndarray) -> bytes:
    return cv2.imencode(".jpeg", image)[1].tobytes()


def write_archive(root: Path, *, normal: int = 4, bacteria: int = 4, virus: int = 4, split: str = "train",
                  first: int = 0) -> Path:
    """An archive-layout folder ``root/<split>/{NORMAL,PNEUMONIA}`` with synthetic JPEGs.

    Two images per patient, so that patient grouping matters. ``first`` shifts the image and patient
    numbers, so that two calls (a train and a test folder) make different images of different patients.
    """
    for folder, count, name in (("NORMAL", normal, "IM-{p:04d}-{i:04d}.jpeg"),
                                ("PNEUMONIA", bacteria, "person{p}_bacteria_{i}.jpeg"),
                                ("PNEUMONIA", virus, "person{p}_virus_{i}.jpeg")):
        target = root / split / folder
        target.mkdir(parents=True, exist_ok=True)
        offset = {"NORMAL": 0, "PNEUMONIA": 1000 if "bacteria" in name else 2000}[folder]
        for i in range(first, first + count):
            patient = offset + i // 2
            path = target / name.format(p=patient, i=i)
            path.write_bytes(jpeg_bytes(xray_like(offset + i)))
    return root


def png_with_size(width: int, height: int, *, bit_depth: int = 8, colour_type: int = 0) -> bytes:
    """A tiny PNG whose header claims width x height (a decompression-bomb header); colour type 6 is RGBA."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00\x00")) + chunk(b"IEND", b"")


def dicom_bytes(pixels: np.ndarray, photometric: str = "MONOCHROME2", *, bits: int = 12,
                window: tuple[float, float] | None = None, modality: str = "DX") -> bytes:
    """A minimal valid DICOM file (explicit VR little endian) holding ``pixels`` (uint16, or uint8 when bits <= 8)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # digital X-ray
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = meta.MediaStorageSOPClassUID
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.Modality = modality
    dataset.Rows, dataset.Columns = pixels.shape
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = photometric
    allocated = 8 if bits <= 8 else 16
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = allocated, bits, bits - 1
    dataset.PixelRepresentation = 0
    if window is not None:
        dataset.WindowCenter, dataset.WindowWidth = window
    dataset.PixelData = pixels.astype(np.uint8 if allocated == 8 else np.uint16).tobytes()
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True) if _pydicom3() else dataset.save_as(buffer, write_like_original=False)
    return buffer.getvalue()


def _pydicom3() -> bool:
    import pydicom

    return int(pydicom.__version__.split(".")[0]) >= 3


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "train").is_dir():
        pytest.skip(f"the shared training split is not at {SHARED_DATA} (set PNEUMO_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def shared_weights() -> Path:
    if not SHARED_WEIGHTS.is_file():
        pytest.skip(f"the shared MobileNetV2 weights are not at {SHARED_WEIGHTS}")
    return SHARED_WEIGHTS


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, shared_data, cache_dir) -> Path:
    """A cnn trained for 2 epochs on 192 real images, with an internal test split (holdout)."""
    from pneumo.config import TrainConfig
    from pneumo.training.train import train

    run_dir = tmp_path_factory.mktemp("runs") / "tiny-cnn"
    config = TrainConfig().replace(model="cnn", epochs=2, max_train_images=192, holdout=0.15, data=str(shared_data),
                                   cache_dir=str(cache_dir), accelerator="cpu", seed=1)
    train(config, run_dir, progress_bar=False)
    return run_dir


@pytest.fixture(scope="session")
def tiny_run_b(tmp_path_factory, shared_data, cache_dir) -> Path:
    """A second tiny model on the same split as ``tiny_run``, for comparisons."""
    from pneumo.config import TrainConfig
    from pneumo.training.train import train

    run_dir = tmp_path_factory.mktemp("runs") / "tiny-mnv3"
    config = TrainConfig().replace(model="mobilenet_v3_small", epochs=1, max_train_images=128, holdout=0.15,
                                   data=str(shared_data), cache_dir=str(cache_dir), accelerator="cpu", seed=2)
    train(config, run_dir, progress_bar=False)
    return run_dir


@pytest.fixture(scope="session")
def untrained(tmp_path_factory) -> Path:
    """The bundle of an untrained small CNN (64 px): for tests of what surrounds a model, which any model will do,
    so that they run without the shared data."""
    import torch

    from pneumo.models import create_model
    from pneumo.models.bundle import save_bundle

    folder = tmp_path_factory.mktemp("untrained")
    torch.manual_seed(0)
    save_bundle(folder / "model.pt", create_model("cnn", num_classes=3).eval(), model_name="cnn", size=64, id="untrained")
    return folder


@pytest.fixture(scope="session")
def synthetic_images(tmp_path_factory) -> list[Path]:
    """Eight different X-ray-like JPEG files."""
    folder = tmp_path_factory.mktemp("synthetic-images")
    paths = [folder / f"xray-{seed}.jpeg" for seed in range(8)]
    for seed, path in enumerate(paths):
        path.write_bytes(jpeg_bytes(xray_like(seed, 256)))
    return paths


@pytest.fixture(scope="session")
def shared_images(shared_data) -> list[Path]:
    """A few real images of each class."""
    normal = sorted((shared_data / "train" / "NORMAL").iterdir())[:3]
    pneumonia = sorted((shared_data / "train" / "PNEUMONIA").iterdir())[:5]
    return normal + pneumonia


def chromium_or_skip() -> str:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (.ci/run installs it)")
    return CHROMIUM


CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
