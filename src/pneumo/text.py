"""Text from files and users made safe to show: no control characters for a terminal, no formulas for a spreadsheet."""

from __future__ import annotations

import re

__all__ = ["csv_cell", "printable"]

# Control characters (C0 but tab and newline, DEL, C1) and the invisible bidirectional overrides: in a file name or a
# DICOM field they could move the cursor, erase lines, clear the screen or reorder what a reader sees.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_CONTROL_OR_NEWLINE = re.compile(_CONTROL.pattern[:-1] + "\n\t]")
_FORMULA = ("=", "+", "-", "@")  # what a spreadsheet reads as the start of a formula (tab and CR are replaced first)


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
