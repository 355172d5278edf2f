"""Terminal output helpers for the CLI layer: one console, progress bars, tables."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from pneumo.text import printable

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


# No emoji codes: ":abc:" in a host name or a file name stays as it is.
console = SafeConsole(emoji=False)
errors = SafeConsole(stderr=True, soft_wrap=True, emoji=False)  # never break a path in an error message


@contextmanager
def progress_bar(description: str, *, on_stderr: bool = False) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar; yields a ``callback(done, total)`` for the work to call.

    ``on_stderr`` keeps stdout clean for machine output (the bar then disappears when done).
    """
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=errors if on_stderr else console, transient=on_stderr,
    ) as progress:
        task = progress.add_task(description, total=None, rate="")
        started = time.perf_counter()

        def update(done: int, total: int) -> None:
            elapsed = time.perf_counter() - started
            progress.update(task, completed=done, total=total, rate=f"{done / elapsed:.1f}/s" if elapsed > 0 else "")

        yield update


def fields(title: str, pairs: list[tuple[str, object]]) -> Table:
    """A rich table of names and their values, a line each, folded rather than cut at any width."""
    result = Table(title=Text(title), title_justify="left", show_header=False)
    result.add_column(no_wrap=True)
    result.add_column(overflow="fold")
    for name, value in pairs:
        result.add_row(Text(name), Text(printable(str(value))))
    return result


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
