"""Matplotlib without a display, and one way to save a figure."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["plt", "save_figure"]


def save_figure(figure, out: str | Path, dpi: int = 100) -> Path:
    """Lay out, write atomically (a reader never sees half a PNG) and close ``figure``."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    temporary = out.with_name(f".{out.stem}.tmp.png")
    figure.savefig(temporary, dpi=dpi)
    plt.close(figure)
    temporary.replace(out)
    return out
