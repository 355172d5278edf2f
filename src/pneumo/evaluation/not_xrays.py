"""Images that are not pediatric chest X-rays, for measuring the novelty check.

All come from what pneumo already installs, so that tests and studies need no download:
noise, photographs and a medical scan from matplotlib's sample data, CT and MR slices from
pydicom's test files, charts rendered with matplotlib, and a page of text.
"""

from __future__ import annotations

import gzip
import io

import cv2
import numpy as np

__all__ = ["not_xray_images"]


def not_xray_images(seed: int = 0) -> dict[str, np.ndarray]:
    """{name: grey uint8 image (H, W)}: 15 images of six kinds (noise, photo, graphic, other scans, chart, text)."""
    from matplotlib import cbook
    from pydicom.data import get_testdata_file

    from pneumo.data.readers import read_image

    rng = np.random.default_rng(seed)
    smooth = cv2.GaussianBlur(rng.integers(0, 256, (512, 512)).astype(np.float32), (0, 0), 8)
    images = {
        "noise: uniform": rng.integers(0, 256, (512, 512), dtype=np.uint8),
        "noise: gaussian": np.clip(rng.normal(128, 40, (512, 512)), 0, 255).astype(np.uint8),
        "noise: smooth": _stretch(smooth),
        "photo: portrait (grace_hopper.jpg)": read_image(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))[0],
        "photo: packaging (Minduka_Present_Blue_Pack.png)":
            read_image(cbook.get_sample_data("Minduka_Present_Blue_Pack.png", asfileobj=False))[0],
        "graphic: logo (logo2.png)": read_image(cbook.get_sample_data("logo2.png", asfileobj=False))[0],
        "map: terrain elevation": _stretch(np.load(cbook.get_sample_data("jacksboro_fault_dem.npz", asfileobj=False))
                                           ["elevation"]),
    }
    with gzip.open(cbook.get_sample_data("s1045.ima.gz", asfileobj=False)) as file:  # a 256x256 16-bit MR slice
        images["scan: MR head (s1045.ima)"] = _stretch(np.frombuffer(file.read(), np.uint16).reshape(256, 256))
    for name in ("CT_small.dcm", "MR_small.dcm"):
        images[f"scan: DICOM {name}"] = read_image(get_testdata_file(name))[0]
    for kind in ("line", "bar", "scatter", "histogram"):
        images[f"chart: {kind}"] = _chart(kind, rng)
    images["text: a page"] = _text_page()
    return images


def _stretch(values: np.ndarray) -> np.ndarray:
    return cv2.normalize(values.astype(np.float32), None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)


def _chart(kind: str, rng: np.random.Generator) -> np.ndarray:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 5), dpi=100)
    if kind == "line":
        axes.plot(np.cumsum(rng.normal(size=100)))
    elif kind == "bar":
        axes.bar(range(8), rng.uniform(1, 10, 8))
    elif kind == "scatter":
        axes.scatter(*rng.normal(size=(2, 200)))
    else:
        axes.hist(rng.normal(size=500), bins=30)
    axes.set_title(f"a {kind} chart")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return cv2.imdecode(np.frombuffer(buffer.getvalue(), np.uint8), cv2.IMREAD_GRAYSCALE)


def _text_page() -> np.ndarray:
    page = np.full((800, 600), 255, np.uint8)
    for line in range(20):
        cv2.putText(page, "Lorem ipsum dolor sit amet, consectetur", (20, 40 + 36 * line), cv2.FONT_HERSHEY_SIMPLEX,
                    0.6, 0, 1)
    return page
