"""Writing files so that a reader never sees half of one: write beside it, then rename over it."""

from __future__ import annotations

import os
from pathlib import Path


def atomic_write(path: str | Path, content: str | bytes) -> Path:
    """Write ``content`` to ``path`` through a temporary file in the same folder and an atomic rename.

    An interrupted write leaves the old file (or none), never a truncated one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    if isinstance(content, bytes):
        temporary.write_bytes(content)
    else:
        temporary.write_text(content)
    os.replace(temporary, path)
    return path
