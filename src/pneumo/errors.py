"""Errors raised where input enters pneumo; each message names the file and the reason."""

from __future__ import annotations

from pathlib import Path


class PneumoError(Exception):
    """Base class of pneumo's own errors."""


class ImageReadError(PneumoError, ValueError):
    """An image file could not be read; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str | Path, reason: str, *, status: int = 422) -> None:
        self.path = str(path)
        self.reason = reason
        # The HTTP status that fits: 415 for an unsupported type, 422 for a broken file.
        self.status = status
        super().__init__(f"{self.path}: {reason}")


class ModelFileError(PneumoError, ValueError):
    """A model or weights file is missing, not a pneumo bundle, or does not fit the model."""


class DataLayoutError(PneumoError, ValueError):
    """A data folder does not have the expected layout."""
