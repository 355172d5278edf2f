from pathlib import Path

import numpy as np
import pytest
import torch

from pneumo.data import acquisition
from pneumo.inference import softmax
from pneumo.config import TrainConfig
from pneumo.evaluation.stress import BATTERY, Perturbation, perturb, stress_test
from tests.conftest import REPO, xray_like


def sharpness_model(images: np.ndarray) -> np.ndarray:
    """A 'model' that learned the shortcut: sharp images are normal, soft ones bacterial (probabilities)."""
    batch = torch.from_numpy(images).float()[:, None] / 255
    kernel = torch.tensor([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=torch.float32).view(1, 1, 3, 3)
    score = torch.nn.functional.conv2d(batch, kernel).var(dim=(1, 2, 3)).numpy() * 2000
    return softmax(np.stack([score - 1, 1 - score, np.zeros_like(score) - 5], 1))


@pytest.fixture()
def images() -> np.ndarray:
    return np.stack([xray_like(seed, 64) for seed in range(24)])


def test_perturb_is_deterministic_and_returns_8_bit_images(images):
    noise = next(p for p in BATTERY if p.family == "noise")
    a, b = perturb(images, noise), perturb(images, noise)
    assert a.dtype == np.uint8 and a.shape == images.shape
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, images)


def test_identity_perturbation_flips_nothing_and_keeps_the_clean_scores(images):
    labels = sharpness_model(images).argmax(1)
    identity = Perturbation("none", "middle", "unchanged", lambda x, pixels, generator: x)
    result = stress_test(sharpness_model, images, labels, np.arange(len(labels)).astype(str), battery=(identity,),
                         resamples=50)
    row = result["perturbations"][0]
    assert row["flip_rate"] == 0 and row["accuracy"] == result["clean"]["accuracy"] == 1.0


def test_a_sharpness_shortcut_is_caught_by_the_blur_rows(images):
    labels = np.zeros(len(images), int)  # all normal, and the shortcut model calls them normal when sharp
    result = stress_test(sharpness_model, images, labels, np.arange(len(labels)).astype(str), resamples=50)
    rows = {row["name"]: row for row in result["perturbations"]}
    assert result["clean"]["recall_normal"] == 1.0
    assert rows["blur/severe"]["recall_normal"] < 0.5 and rows["blur/severe"]["flip_rate"] > 0.5
    assert rows["blur/mild"]["flip_rate"] <= rows["blur/severe"]["flip_rate"]
    summary = result["summary"]
    assert summary["worst_recall_normal"]["value"] == min(r["recall_normal"] for r in rows.values() if r["severity"] == "middle")
    assert summary["blur_flip_rate"] == rows["blur/middle"]["flip_rate"]


def test_battery_scales_pixel_strengths_to_the_image_size():
    """Blur sigma 2 px at 224 px is sigma 1 px at 112 px: the same image at half size changes the same way."""
    big = torch.from_numpy(xray_like(3, 224)).float()[None, None] / 255
    small = torch.nn.functional.interpolate(big, size=(112, 112), mode="area")
    blur = next(p for p in BATTERY if p.name == "blur/middle")
    from_big = torch.nn.functional.interpolate(blur.apply(big, 1.0, None), size=(112, 112), mode="area")
    torch.testing.assert_close(blur.apply(small, 0.5, None), from_big, atol=0.02, rtol=0)
    torch.testing.assert_close(acquisition.gaussian_blur(small, 1.0), blur.apply(small, 0.5, None))


def test_middle_severities_lie_outside_every_shipped_training_range():
    """The battery measures generalization: no middle severity is inside the recipes' augmentation (the middle
    zoom-in apart for a recipe trained against tight framing), and the "beyond" zoom-in is outside every one."""
    middle = {p.family: p.apply.keywords for p in BATTERY if p.severity == "middle"}
    beyond = {p.family: p.apply.keywords for p in BATTERY if p.severity == "beyond"}
    for path in sorted((REPO / "configs").glob("*.yaml")):
        # The recipe as training reads it (nested sections or flat), not the file's top-level keys.
        recipe = TrainConfig.from_yaml(path).flat()
        assert recipe["blur"] > 0 and recipe["jpeg"] > 0, path  # the recipes do augment: the comparisons mean something
        assert middle["blur"]["sigma"] > recipe.get("blur", 0), path
        assert middle["unsharp"]["amount"] > recipe.get("sharpen", 0), path
        assert middle["down-up"]["factor"] < 1 - recipe.get("downsample", 0), path
        assert middle["noise"]["std"] > recipe.get("noise", 0), path
        assert middle["jpeg"]["quality"] < (recipe.get("jpeg") or 101), path
        assert middle["gamma-low"]["value"] < 1 / (1 + recipe.get("gamma", 0)), path
        assert middle["gamma-high"]["value"] > 1 + recipe.get("gamma", 0), path
        assert middle["contrast-low"]["factor"] < 1 - recipe.get("contrast", 0), path
        assert middle["contrast-high"]["factor"] > 1 + recipe.get("contrast", 0), path
        # By area: the crop's kept area, not its extreme aspect.
        largest_zoom_in = ((1 + recipe.get("zoom", 0.1)) / np.sqrt(1 - recipe.get("crop", 0))
                           * (1 + recipe.get("framing", 0)))
        assert beyond["zoom-in"]["scale"] > largest_zoom_in, path
        # A recipe trained against tight framing covers the middle zoom-in; every other recipe does not.
        assert (middle["zoom-in"]["scale"] > largest_zoom_in) == (not recipe.get("framing")), path
        assert middle["zoom-out"]["scale"] < 1 - recipe.get("zoom", 0.1), path
        assert max(middle["shift"]["shift"]) > recipe.get("shift", 0.1), path
        assert middle["rotation"]["rotation"] > recipe.get("rotation", 10), path
