"""Input checks: warnings for images that may not be what the model was trained on.

The models were trained on frontal chest radiographs of children aged one to five, stored as
grey JPEGs. These checks read what the file itself says (size, colour, and for DICOM the
modality, view, body part and age) and warn; they do not prove that an image is a pediatric
frontal chest X-ray, and an image that passes them can still be far from the training data.
"""

from __future__ import annotations

import re

from pneumo.data.readers import ImageInfo
from pneumo.models.info import NoveltyInfo

__all__ = ["ABSTAIN_NOVELTY_FACTOR", "input_warnings", "scope_refusal"]

# An image whose novelty is this many times the model's threshold is refused, not merely flagged. The
# threshold itself flags 1% of validation X-rays by design (an ordinary X-ray can be unusual), so refusing
# there would turn away one real X-ray in a hundred; the factor sits between where ordinary X-rays end and
# where pneumo's not-X-ray set begins on the shipped models (benchmarks/trust/ and benchmarks/novelty/).
ABSTAIN_NOVELTY_FACTOR = 1.2

RADIOGRAPHY = {"CR", "DX", "DR"}  # computed and digital radiography ("DR" is not standard, but some systems write it)
FRONTAL_VIEWS = {"AP", "PA", ""}
SMALLEST_SIDE = 128  # pixels; the archive's images are ~1000-2900 px a side, exports rarely under 256
TRAINING_AGES = (1.0, 5.0)  # years, from the archive's description
_AGE = re.compile(r"^(\d{1,3})([DWMY])$")
_YEARS_PER_UNIT = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0}


def input_warnings(info: ImageInfo) -> list[str]:
    """Plain-language warnings for one image's ImageInfo; empty when nothing looks off."""
    warnings = []
    if info.colour:
        warnings.append("a colour image: chest X-rays are grey, so this may not be one")
    if min(info.width, info.height) < SMALLEST_SIDE:
        warnings.append(f"only {info.width}x{info.height} pixels: smaller than chest X-ray exports, so the answer "
                        "rests on little detail")
    dicom = info.dicom
    modality = dicom.get("Modality", "").upper()
    if modality and modality not in RADIOGRAPHY:
        warnings.append(f"DICOM modality {modality}, not a radiograph (CR/DX): the model was trained on chest "
                        "radiographs only")
    view = dicom.get("ViewPosition", "").upper()
    if view not in FRONTAL_VIEWS:
        warnings.append(f"view position {view}: the model was trained on frontal (AP/PA) views only")
    part = dicom.get("BodyPartExamined", "").upper()
    if part and "CHEST" not in part and "THORAX" not in part:
        warnings.append(f"body part {part}: the model was trained on chest images only")
    years = _age_in_years(dicom.get("PatientAge", ""))
    if years is not None and not TRAINING_AGES[0] <= years <= TRAINING_AGES[1]:
        who = ("an adult" if years >= 18 else "an infant under one year" if years < 1
               else "a child older than five")
        warnings.append(f"patient age {dicom['PatientAge']} ({_age_in_words(dicom['PatientAge'])}, {who}): the model "
                        f"was trained on children aged {TRAINING_AGES[0]:g} to {TRAINING_AGES[1]:g}")
    return warnings


_UNIT_WORDS = {"D": "day", "W": "week", "M": "month", "Y": "year"}


def _age_in_words(age: str) -> str:
    """``018M`` -> "18 months", ``000Y`` -> "0 years" (DICOM's age string as written, units spelled out)."""
    match = _AGE.match(age.strip().upper())
    count = int(match.group(1))
    return f"{count} {_UNIT_WORDS[match.group(2)]}{'' if count == 1 else 's'}"


def _age_in_years(age: str) -> float | None:
    """DICOM's age string (``005Y``, ``018M``, ``003W``, ``010D``) in years; None when absent or malformed."""
    match = _AGE.match(age.strip().upper())
    return int(match.group(1)) * _YEARS_PER_UNIT[match.group(2)] if match else None


def scope_refusal(info: ImageInfo | None, novelty: float | None, check: NoveltyInfo | None) -> str | None:
    """Why an image is outside what the model may answer (a colour picture, a DICOM that is not a radiograph, a
    novelty far above the model's threshold), in words; None when it is within scope."""
    if info is not None and info.colour:
        return "a colour picture, not a radiograph"
    modality = (info.dicom.get("Modality", "") if info is not None else "").upper()
    if modality and modality not in RADIOGRAPHY:
        return f"DICOM modality {modality}, not a radiograph (CR/DX)"
    if novelty is not None and check is not None and novelty > ABSTAIN_NOVELTY_FACTOR * check.threshold:
        return (f"far from every training X-ray (novelty {novelty:.2f}, above {ABSTAIN_NOVELTY_FACTOR:g} x the "
                f"{check.threshold:.2f} that {100 * (1 - check.false_alarm_rate):g}% of validation X-rays stay under)")
    return None
