"""Input checks: warnings for what a file says about itself (colour, size, DICOM modality, view, body part, age)."""


import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from pneumo.cli import app
from pneumo.data.readers import ImageInfo, decode_image
from pneumo.inference.checks import input_warnings
from tests.conftest import dicom_bytes, xray_like


def test_a_pediatric_frontal_radiograph_gets_no_warning():
    assert input_warnings(ImageInfo(1000, 800, dicom={"Modality": "DX", "ViewPosition": "AP", "PatientAge": "003Y",
                                                      "BodyPartExamined": "CHEST"})) == []


@pytest.mark.parametrize("info, words", [
    (ImageInfo(1000, 800, colour=True), "a colour image"),
    (ImageInfo(100, 90), "only 100x90 pixels"),
    (ImageInfo(512, 512, dicom={"Modality": "CT"}), "DICOM modality CT, not a radiograph (CR/DX)"),
    (ImageInfo(512, 512, dicom={"Modality": "OT"}), "DICOM modality OT"),
    (ImageInfo(512, 512, dicom={"ViewPosition": "LL"}), "view position LL: the model was trained on frontal"),
    (ImageInfo(512, 512, dicom={"BodyPartExamined": "SKULL"}), "body part SKULL"),
    (ImageInfo(512, 512, dicom={"PatientAge": "045Y"}), "patient age 045Y (45 years, an adult)"),
    (ImageInfo(512, 512, dicom={"PatientAge": "006M"}), "patient age 006M (6 months, an infant under one year)"),
    (ImageInfo(512, 512, dicom={"PatientAge": "000Y"}), "patient age 000Y (0 years, an infant under one year)"),
    (ImageInfo(512, 512, dicom={"PatientAge": "010D"}), "patient age 010D (10 days, an infant under one year)"),
    (ImageInfo(512, 512, dicom={"PatientAge": "006W"}), "patient age 006W (6 weeks, an infant under one year)"),
    (ImageInfo(512, 512, dicom={"PatientAge": "007Y"}), "patient age 007Y (7 years, a child older than five)"),
])
def test_each_check_warns_in_words(info, words):
    [warning] = input_warnings(info)
    assert words in warning


@pytest.mark.parametrize("age", ["018M", "001Y", "005Y", "060M"])
def test_ages_in_months_within_one_to_five_years_get_no_warning(age):
    assert input_warnings(ImageInfo(512, 512, dicom={"PatientAge": age})) == []


def test_colour_pictures_are_told_from_grey_images_stored_as_rgb():
    grey = xray_like(0, 200)
    as_rgb = np.dstack([grey] * 3)
    photo = as_rgb.copy()
    photo[..., 0] = 255 - photo[..., 0]  # a channel that differs: a colour picture
    assert not decode_image(cv2.imencode(".png", as_rgb)[1].tobytes(), "grey.png")[1].colour
    assert decode_image(cv2.imencode(".png", photo)[1].tobytes(), "photo.png")[1].colour


def test_dicom_attributes_are_reported_and_checked(tmp_path, shared_images):
    """A CT slice gets the modality warning; its attributes appear in the JSON and CSV output."""
    ct = tmp_path / "ct.dcm"
    ct.write_bytes(dicom_bytes(np.arange(256 * 256).reshape(256, 256) % 4000, modality="CT"))
    runner = CliRunner()
    result = runner.invoke(app, ["predict", str(ct), str(shared_images[0]), "--json"])
    assert result.exit_code == 0, result.output
    import json

    ct_answer, jpeg_answer = json.loads(result.stdout)["predictions"]
    assert ct_answer["dicom"]["Modality"] == "CT" and "not a radiograph" in ct_answer["warnings"][0]
    # Outside the model's scope: refused with the reason, while the X-ray beside it is answered.
    assert ct_answer["class"] is None and ct_answer["not_classified"] == "DICOM modality CT, not a radiograph (CR/DX)"
    assert jpeg_answer["warnings"] == [] and "dicom" not in jpeg_answer and jpeg_answer["class"]
    table = runner.invoke(app, ["predict", str(ct)])
    assert "warning: " in table.output and "DICOM modality CT" in " ".join(table.output.split())
    rows = runner.invoke(app, ["predict", str(ct), "--csv"]).stdout.splitlines()
    assert rows[0].endswith("warnings,novelty,novelty_threshold,PatientID,StudyInstanceUID,SeriesInstanceUID,"
                            "SOPInstanceUID,Modality,ViewPosition,PatientAge,BodyPartExamined,error,model")
    assert ",CT," in rows[1] and rows[1].split(",")[1] == "not classified"


def test_noise_a_photo_and_a_chart_are_flagged_or_refused():
    """Not chest X-rays: a colour photo and a colour chart get the colour warning; flat noise-free pictures are refused."""
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    chart = np.full((300, 400, 3), 255, np.uint8)
    cv2.rectangle(chart, (50, 100), (120, 280), (200, 80, 30), -1)
    cv2.rectangle(chart, (180, 40), (250, 280), (30, 160, 60), -1)
    for picture, name in ((photo, "photo.png"), (chart, "chart.png")):
        info = decode_image(cv2.imencode(".png", picture)[1].tobytes(), name)[1]
        assert "a colour image" in input_warnings(info)[0]
