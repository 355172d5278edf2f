"""Terminal output helpers for the CLI layer: one console, progress bars, tables."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

# Control characters (C0 but tab and newline, DEL, C1) and the invisible bidirectional overrides: in a file name or a
# DICOM field they could move the cursor, erase lines, clear the screen or reorder what a reader sees.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_CONTROL_OR_NEWLINE = re.compile(_CONTROL.pattern[:-1] + "\n\t]")
_FORMULA = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet reads as the start of a formula


def printable(text: str, *, newlines: bool = False) -> str:
    """``text`` with every control character replaced by "?" (newlines too, unless ``newlines``): safe to show.

    The replacement has the same length, so styled spans over the text stay where they were.
    """
    return (_CONTROL if newlines else _CONTROL_OR_NEWLINE).sub("?", text)


def csv_cell(value: object) -> str:
    """A CSV cell that a spreadsheet shows as text: control characters replaced, and a leading = + - @ (which
    would start a formula: =HYPERLINK(...)) escaped with a quote, as OWASP recommends."""
    text = printable(str(value))
    return "'" + text if text.startswith(_FORMULA) and not _is_number(text) else text


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class SafeConsole(Console):
    """A console that never writes a control character it did not put there itself (see ``printable``)."""

    def print(self, *objects, **options) -> None:
        safe = []
        for item in objects:
            if isinstance(item, str):
                item = printable(item, newlines=True)
            elif isinstance(item, Text):
                item = item.copy()
                item.plain = printable(item.plain, newlines=True)
            safe.append(item)
        super().print(*safe, **options)


console = SafeConsole()
errors = SafeConsole(stderr=True, soft_wrap=True)  # never break a path in an error message


@contextmanager
def progress_bar(description: str, *, on_stderr: bool = False) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar; yields a ``callback(done, total)`` for the work to call.

    ``on_stderr`` keeps stdout clean for machine output (the bar then disappears when done).
    """
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TimeRemainingColumn(), console=errors if on_stderr else console, transient=on_stderr,
    ) as progress:
        task = progress.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        yield update


def table(title: str, columns: list[str], rows: list[list[object]]) -> Table:
    """A rich table with the first column left-aligned and the others right-aligned."""
    result = Table(title=Text(title), title_justify="left")
    for number, column in enumerate(columns):
        # The first column holds names and paths: fold them rather than cut them.
        result.add_column(column, justify="left" if number == 0 else "right",
                          overflow="fold" if number == 0 else "ellipsis")
    for row in rows:
        # Text, not markup: cells hold file names and other user strings, which may contain "[".
        result.add_row(*(Text(printable(str(cell))) for cell in row))
    return result
