"""Default locations, overridable by environment variables."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

DEFAULT_MODEL = "pneumo-ensemble"  # the best shipped model on validation and stress (scripts/README.md)


def data_dir() -> Path:
    """``$PNEUMO_DATA``, else ``data/chest_xray``."""
    return Path(os.environ.get("PNEUMO_DATA", "data/chest_xray"))


def cache_dir() -> Path:
    """``$PNEUMO_CACHE``, else ``cache``."""
    return Path(os.environ.get("PNEUMO_CACHE", "cache"))


def models_dir() -> Path:
    """The shipped models: ``$PNEUMO_MODELS``, else the copy installed with the package.

    In a source checkout that copy is ``models/`` itself (``pneumo/shipped_models`` links to it);
    a wheel carries the files.
    """
    if "PNEUMO_MODELS" in os.environ:
        return Path(os.environ["PNEUMO_MODELS"])
    return Path(str(resources.files("pneumo").joinpath("shipped_models")))


def shipped_models() -> list[str]:
    folder = models_dir()
    return sorted(p.name for p in folder.iterdir() if (p / "model.pt").is_file()) if folder.is_dir() else []


def is_shipped(model: str | Path) -> bool:
    """Whether ``model`` (a name or path) is one of the shipped models, which commands must not rewrite."""
    folder = models_dir().resolve()
    return resolve_model(model).resolve().is_relative_to(folder)


def default_model() -> Path:
    """``$PNEUMO_MODEL``, else the shipped default model (DEFAULT_MODEL)."""
    return Path(os.environ.get("PNEUMO_MODEL", models_dir() / DEFAULT_MODEL))


def resolve_model(model: str | Path) -> Path:
    """A path as given when it exists, else the shipped model of that name (``pneumo-mobilenet``).

    A name that is neither is returned as a path, so that the loader reports it as missing.
    """
    path = Path(model)
    if path.exists() or len(path.parts) != 1:
        return path
    shipped = models_dir() / path.name
    return shipped if shipped.is_dir() else path
