"""Tables built once, as rows, and rendered to Markdown and HTML here and to the terminal by
``pneumo.console.table``: the epoch study, the image counts per role and class, the comparison."""

from __future__ import annotations

import html
from dataclasses import dataclass

import numpy as np

from pneumo.labels import CLASSES

__all__ = ["Rows", "count_rows", "html_table", "markdown_table"]


@dataclass(frozen=True)
class Rows:
    """A titled table: column names and rows of cells (rendered with ``str``)."""

    title: str
    columns: list[str]
    rows: list[list[object]]

    def markdown(self) -> str:
        return markdown_table(self.columns, self.rows)

    def html(self) -> str:
        return html_table(self.columns, self.rows)


def markdown_table(columns: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows])


def html_table(columns: list[str], rows: list[list[object]], *, css_class: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    attribute = f" class='{css_class}'" if css_class else ""
    return f"<table{attribute}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def count_rows(title: str, roles: np.ndarray, labels: np.ndarray, patients: np.ndarray | None = None, *,
               role_name: str = "role") -> Rows:
    """Images per role (or archive split) and class, with the total and, given ``patients``, the patient count.

    Args:
        roles: (N,) each image's role or split.
        labels: (N,) class indices.
        patients: (N,) patient ids, or None to leave the column out.
    """
    rows, present = [], set(roles)
    for role in [r for r in ("train", "val", "test") if r in present] + sorted(present - {"train", "val", "test"}):
        chosen = roles == role
        counts = np.bincount(labels[chosen], minlength=len(CLASSES)).tolist()
        rows.append([role, *counts, int(chosen.sum()), *([len(set(patients[chosen]))] if patients is not None else [])])
    return Rows(title, [role_name, *CLASSES, "total", *(["patients"] if patients is not None else [])], rows)
