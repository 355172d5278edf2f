"""Default locations, overridable by environment variables."""

from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path:
    """``$PNEUMO_DATA``, else ``data/chest_xray``."""
    return Path(os.environ.get("PNEUMO_DATA", "data/chest_xray"))


def cache_dir() -> Path:
    """``$PNEUMO_CACHE``, else ``cache``."""
    return Path(os.environ.get("PNEUMO_CACHE", "cache"))


def default_model() -> Path:
    """``$PNEUMO_MODEL``, else the shipped ``models/pneumo-mobilenet``."""
    return Path(os.environ.get("PNEUMO_MODEL", Path(__file__).resolve().parents[2] / "models" / "pneumo-mobilenet"))
