"""The Python API as the README shows it, and its inputs: paths, arrays, PIL images, lists with bad items."""

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import pneumo
from pneumo.errors import ImageReadError, ModelFileError

REPO = Path(__file__).resolve().parents[1]


def test_the_readme_snippet_runs(shared_images, tmp_path, monkeypatch, capsys):
    """The README's Python example, executed as written, from another folder, on a real image."""
    readme = (REPO / "README.md").read_text()
    snippet = re.search(r"```python\n(import pneumo\n.*?)```", readme, re.S).group(1)
    image = tmp_path / "path" / "to" / "xray.jpeg"
    image.parent.mkdir(parents=True)
    image.write_bytes(shared_images[-1].read_bytes())
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(snippet, "README.md", "exec"), namespace)
    result = namespace["result"]
    assert result.label in ("NORMAL", "Bacterial Pneumonia", "Viral Pneumonia") and result.reason
    assert re.search(r"^(NORMAL|Bacterial Pneumonia|Viral Pneumonia) \{'normal': ", capsys.readouterr().out)


def test_arrays_pil_images_and_paths_give_the_same_answer(shared_images):
    model = pneumo.load("pneumo-mobilenet")
    path = shared_images[0]
    from_path = model.predict(str(path))
    gray = np.asarray(Image.open(path).convert("L"))
    from_array = model.predict(gray)
    from_rgb = model.predict(np.dstack([gray] * 3))
    from_pil = model.predict(Image.open(path))
    for other in (from_array, from_rgb, from_pil):
        assert other.label == from_path.label
        assert other.probabilities == pytest.approx(from_path.probabilities, abs=1e-4)
    assert 0 <= from_path.p_pneumonia <= 1 and "P(pneumonia)" in from_path.reason
    assert "pneumonia when" in model.rule and model.id == "pneumo-mobilenet"


def test_a_list_keeps_going_past_bad_items_and_a_single_bad_item_raises(shared_images, tmp_path):
    model = pneumo.load("pneumo-cnn", backend="torch")
    results = model.predict([str(shared_images[0]), np.zeros((50, 50)), str(tmp_path / "missing.png")],
                            gradcam=True)
    assert results[0].ok and results[0].gradcam.shape[2] == 3
    assert "nearly uniform" in results[1].error and results[2].error == "file not found"
    with pytest.raises(ImageReadError, match="cannot classify a dict"):
        model.predict({"not": "an image"})


def test_unknown_model_names_list_the_shipped_ones():
    with pytest.raises(ModelFileError, match=r"the name of a shipped model \(.*pneumo-cnn.*pneumo-mobilenet"):
        pneumo.load("pneumo-nonexistent", backend="torch")


def test_prediction_does_not_pull_in_evaluation():
    """One direction only: evaluation may use the prediction path, never the reverse."""
    import subprocess
    import sys

    code = "import sys, pneumo.predict, pneumo.api; print(sorted(m for m in sys.modules if m.startswith('pneumo.evaluation')))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def test_arrays_of_any_dtype_16_bit_pil_images_and_bytes_are_classified(shared_images):
    model = pneumo.load("pneumo-cnn", backend="torch")
    path = shared_images[1]
    gray = np.asarray(Image.open(path).convert("L"))
    reference = model.predict(gray)
    as_float_rgb = np.dstack([gray] * 3).astype(np.float64) / 255
    deep = Image.fromarray(gray.astype(np.uint16) * 257)  # mode I;16: no clipping to 8 bits
    for other in (model.predict(as_float_rgb), model.predict(gray.astype(np.int64)), model.predict(deep),
                  model.predict(path.read_bytes())):
        assert other.probabilities == pytest.approx(reference.probabilities, abs=2e-3)
        assert other.warnings == []
    colour = np.random.default_rng(0).random((64, 64, 3))  # floats in [0, 1]
    assert "a colour image" in model.predict(colour).warnings[0]
    with pytest.raises(ImageReadError, match=r"an array of shape \(3, 4, 5, 6\) is not an image"):
        model.predict(np.zeros((3, 4, 5, 6)))
