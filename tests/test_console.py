"""What reaches a terminal or a spreadsheet from file names and DICOM fields: never a control sequence or a formula."""

import csv
import io

import numpy as np
import pytest
from rich.text import Text

from pneumo.console import SafeConsole, table
from pneumo.text import csv_cell, printable
from pneumo.data.readers import decode_image
from pneumo.predict import Prediction, predictions_csv
from tests.conftest import dicom_bytes


@pytest.mark.parametrize("hostile", ["LL\n\x1b[1A\x1b[2K", "name\x1b[2J.png", "\x1b[32m", "a\rb", "\u202egnp.exe",
                                     "bell\x07", "c1\x9b31m"])
def test_control_characters_never_reach_the_terminal(hostile):
    buffer = io.StringIO()
    console = SafeConsole(file=buffer, force_terminal=False, width=200)
    console.print(f"warning: {hostile}", markup=False)
    console.print(Text.assemble(("styled: ", "yellow"), hostile))
    console.print(table("t", ["file"], [[hostile]]))
    written = buffer.getvalue()
    assert not any(ch in written for ch in "\x1b\x07\r\x9b\u202e"), repr(written)


def test_printable_keeps_length_and_plain_text():
    assert printable("plain name.jpeg") == "plain name.jpeg"
    assert printable("a\x1b[2Kb") == "a?[2Kb" and len(printable("a\x1b[2Kb")) == len("a\x1b[2Kb")
    assert printable("two\nlines") == "two?lines" and printable("two\nlines", newlines=True) == "two\nlines"


@pytest.mark.parametrize("value, shown", [("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"),
                                          ("+1+1", "'+1+1"), ("@SUM(A1)", "'@SUM(A1)"), ("-cmd", "'-cmd"),
                                          ("-0.25", "-0.25"), ("IM-0001.jpeg", "IM-0001.jpeg")])
def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised(value, shown):
    assert csv_cell(value) == shown


def test_hostile_dicom_fields_are_cleaned_where_they_are_read_and_csv_is_safe():
    data = dicom_bytes((np.arange(64 * 64).reshape(64, 64) % 4000).astype(np.uint16))
    image, info = decode_image(data, "x.dcm")
    info.dicom["PatientID"] = "=HYPERLINK(\"http://evil\")"  # as a PACS export could carry it
    prediction = Prediction("=cmd|' /C calc'!A0.dcm", "NORMAL", {"normal": 0.9, "bacterial": 0.05, "viral": 0.05},
                            reason="r", dicom=info.dicom)
    (row,) = csv.DictReader(io.StringIO(predictions_csv([prediction], "m")))
    assert row["PatientID"].startswith("'=") and row["file"].startswith("'=")


def test_dicom_fields_with_escape_sequences_are_cleaned_when_read():
    from pydicom import dcmread

    dataset = dcmread(io.BytesIO(dicom_bytes((np.arange(64 * 64).reshape(64, 64) % 4000).astype(np.uint16))))
    dataset.ViewPosition = "LL\n\x1b[1A\x1b[2K"
    dataset.BodyPartExamined = "\x1b[32m"
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    _, info = decode_image(buffer.getvalue(), "hostile.dcm")
    assert info.dicom["ViewPosition"] == "LL??[1A?[2K" and info.dicom["BodyPartExamined"] == "?[32m"
