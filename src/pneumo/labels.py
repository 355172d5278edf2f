"""Class names and what a file name of the Kermany archive says about its image.

The class names are defined here once; everything else imports them.
"""

from __future__ import annotations

import re
from pathlib import Path

#: The three classes, in the order of the model outputs.
CLASSES: tuple[str, ...] = ("NORMAL", "Bacterial Pneumonia", "Viral Pneumonia")
NORMAL, BACTERIAL, VIRAL = range(3)
#: Short names for column headers and JSON keys.
SHORT_NAMES: tuple[str, ...] = ("normal", "bacterial", "viral")

_PERSON = re.compile(r"^(person\d+)_", re.IGNORECASE)
_NORMAL_ID = re.compile(r"^((?:NORMAL2-)?IM-\d+)-", re.IGNORECASE)


class LabelError(ValueError):
    """A file's name does not tell its class."""


def class_from_name(archive_folder: str, filename: str) -> int:
    """Class index for a file of the archive layout.

    Args:
        archive_folder: ``NORMAL`` or ``PNEUMONIA`` (the archive's class folder).
        filename: the file's name, e.g. ``person12_bacteria_46.jpeg``.

    Raises:
        LabelError: a PNEUMONIA file names neither bacteria nor virus, or the folder is unknown.
    """
    folder = archive_folder.upper()
    if folder == "NORMAL":
        return NORMAL
    if folder != "PNEUMONIA":
        raise LabelError(f"unknown class folder {archive_folder!r}; expected NORMAL or PNEUMONIA")
    lowered = filename.lower()
    is_bacteria, is_virus = "bacteria" in lowered, "virus" in lowered
    if is_bacteria == is_virus:
        said = "both 'bacteria' and 'virus'" if is_bacteria else "neither 'bacteria' nor 'virus'"
        raise LabelError(f"PNEUMONIA file name says {said}, so its class is unknown")
    return BACTERIAL if is_bacteria else VIRAL


def class_index(name: str) -> int:
    """Index of a class given its folder name or short name (case-insensitive)."""
    lowered = name.lower()
    for index, (full, short) in enumerate(zip(CLASSES, SHORT_NAMES)):
        if lowered in (full.lower(), short):
            return index
    raise LabelError(f"unknown class {name!r}; expected one of {', '.join(CLASSES)}")


def patient_id(filename: str) -> str:
    """Patient of an archive file: ``person<N>``, ``IM-xxxx`` or ``NORMAL2-IM-xxxx``.

    Files whose name follows neither pattern are their own patient (the stem), so a
    split never groups unrelated images and never fails on a user's own file names.
    """
    name = Path(filename).name
    for pattern in (_PERSON, _NORMAL_ID):
        match = pattern.match(name)
        if match:
            return match.group(1)
    return Path(name).stem
