"""Matplotlib without a display, and one way to save a figure."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402

from pneumo.files import atomic_path  # noqa: E402

__all__ = ["plt", "save_figure"]


def save_figure(figure, out: str | Path, dpi: int = 100) -> Path:
    """Lay out, write atomically (a reader never sees half a PNG) and close ``figure``."""
    out = Path(out)
    figure.tight_layout()
    try:
        with atomic_path(out, suffix=".tmp.png") as temporary:  # matplotlib takes the format from the name
            figure.savefig(temporary, dpi=dpi)
    finally:
        plt.close(figure)
    return out
