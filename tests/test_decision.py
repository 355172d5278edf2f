"""The decision rule and the sentence that explains it, checked on hand-made probabilities."""

import json

import numpy as np
from typer.testing import CliRunner

from pneumo.cli import app
from pneumo.inference.decision import decide, reason
from tests.conftest import REPO, jpeg_bytes, xray_like

runner = CliRunner()


def test_a_normal_answer_below_the_operating_point_says_why_despite_a_likelier_pneumonia_class():
    probs = np.array([0.20, 0.05, 0.75])  # P(pneumonia) 0.80 < 0.85, yet viral is the largest single probability
    label = int(decide(probs[None], 0.85)[0])
    assert label == 0
    assert reason(probs, label, 0.85, "chosen on validation for pneumonia sensitivity >= 0.97") == (
        "normal: P(pneumonia) 0.80 is below the operating point 0.85, chosen on validation for pneumonia "
        "sensitivity >= 0.97; viral alone is the most probable class (0.75)")


def test_pneumonia_answers_name_the_threshold_and_the_likelier_kind():
    probs = np.array([0.10, 0.60, 0.30])
    assert reason(probs, int(decide(probs[None], 0.85)[0]), 0.85) == (
        "bacterial pneumonia: P(pneumonia) 0.90 reaches the operating point 0.85; bacterial is the likelier kind "
        "(0.60 vs 0.30)")
    assert reason(probs, 1, None) == "bacterial: the most probable class (0.60)"


def test_predict_outputs_carry_the_reason_and_argmax_is_available(tmp_path):
    image = tmp_path / "x.jpeg"
    image.write_bytes(jpeg_bytes(xray_like(5, 160)))
    model = str(REPO / "models" / "pneumo-cnn")
    # A synthetic image is far from every X-ray: --force answers it anyway.
    shipped = json.loads(runner.invoke(app, ["predict", "--model", model, "--json", "--force", str(image)]).stdout)
    row = shipped["predictions"][0]
    assert row["p_pneumonia"] == round(1 - row["probabilities"]["normal"], 6)
    assert "operating point" in row["reason"] and "operating point" in shipped["decision_rule"]
    argmax = json.loads(runner.invoke(app, ["predict", "--model", model, "--json", "--decision", "argmax", "--force",
                                            str(image)]).stdout)
    assert argmax["predictions"][0]["reason"].endswith(")") and "most probable class" in argmax["predictions"][0]["reason"]
    assert argmax["decision_rule"] == "the most probable class"
    csv_text = runner.invoke(app, ["predict", "--model", model, "--csv", "--force", str(image)]).stdout
    assert csv_text.splitlines()[0].startswith("file,class,p_normal,p_bacterial,p_viral,p_pneumonia,class_set,reason,"
                                               "warnings,")
