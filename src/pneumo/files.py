"""Writing files so that a reader never sees half of one: write beside it, then rename over it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path, *, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path beside ``path`` to write to: renamed over ``path`` when the block ends normally,
    removed when it raises. An interrupted write leaves the old file (or none), never a truncated one.

    ``suffix`` ends the temporary name (``.tmp.png`` for writers that infer the format from it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}{suffix}")
    try:
        yield temporary
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    os.replace(temporary, path)


def atomic_write(path: str | Path, content: str | bytes) -> Path:
    """Write ``content`` to ``path`` atomically (see ``atomic_path``); returns the path."""
    with atomic_path(path) as temporary:
        if isinstance(content, bytes):
            temporary.write_bytes(content)
        else:
            temporary.write_text(content)
    return Path(path)
