import numpy as np
import pytest
import torch

from pneumo.data import acquisition
from pneumo.data.augment import AugmentConfig, augment, random_acquisition
from tests.conftest import xray_like


def sharpness(images: torch.Tensor) -> torch.Tensor:
    """Variance of the Laplacian per image, the usual focus measure."""
    kernel = torch.tensor([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=images.dtype).view(1, 1, 3, 3)
    return torch.nn.functional.conv2d(images, kernel).var(dim=(1, 2, 3))


@pytest.fixture()
def images() -> torch.Tensor:
    return torch.stack([torch.from_numpy(xray_like(seed, 64)).float() / 255 for seed in range(4)])[:, None]


def test_blur_lowers_sharpness_more_with_a_larger_sigma_and_sigma_0_changes_nothing(images):
    torch.testing.assert_close(acquisition.gaussian_blur(images, 0.0), images)
    values = [float(sharpness(acquisition.gaussian_blur(images, sigma)).mean()) for sigma in (0.5, 1.0, 2.0)]
    assert float(sharpness(images).mean()) > values[0] > values[1] > values[2]


def test_blur_keeps_the_mean_and_each_image_gets_its_own_sigma(images):
    blurred = acquisition.gaussian_blur(images, torch.tensor([0.0, 1.0, 2.0, 3.0]))
    torch.testing.assert_close(blurred[0], images[0])
    torch.testing.assert_close(blurred.mean(), images.mean(), atol=2e-3, rtol=0)
    assert sharpness(blurred[1:2]) > sharpness(blurred[3:4])


def test_unsharp_mask_raises_sharpness(images):
    assert float(sharpness(acquisition.unsharp_mask(images, 1.0)).mean()) > float(sharpness(images).mean())
    torch.testing.assert_close(acquisition.unsharp_mask(images, 0.0), images)


def test_resample_loses_detail_and_factor_1_changes_nothing(images):
    torch.testing.assert_close(acquisition.resample(images, 1.0), images)
    assert float(sharpness(acquisition.resample(images, 0.25)).mean()) < float(sharpness(images).mean())


def test_jpeg_error_grows_as_quality_falls(images):
    errors = [float((acquisition.jpeg(images, q) - images).abs().mean()) for q in (95, 50, 10)]
    assert errors[0] < errors[1] < errors[2]
    torch.testing.assert_close(acquisition.jpeg(images, 101), images)


def test_noise_has_the_asked_for_spread_and_is_seeded():
    flat = torch.full((2, 1, 64, 64), 0.5)
    a = acquisition.gaussian_noise(flat, 0.05, torch.Generator().manual_seed(0))
    b = acquisition.gaussian_noise(flat, 0.05, torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, b)
    assert abs(float((a - flat).std()) - 0.05) < 0.003


def test_shift_moves_content_right_and_down():
    image = torch.zeros(1, 1, 50, 50)
    image[..., 20:30, 20:30] = 1.0
    moved = acquisition.affine(image, shift=(0.1, 0.2))
    before = (image[0, 0] > 0.5).nonzero().float().mean(0)
    after = (moved[0, 0] > 0.5).nonzero().float().mean(0)
    torch.testing.assert_close(after - before, torch.tensor([10.0, 5.0]), atol=0.6, rtol=0)  # (rows, columns)


def test_zoom_in_enlarges_content():
    image = torch.zeros(1, 1, 50, 50)
    image[..., 20:30, 20:30] = 1.0
    # 1.5x the side is 2.25x the area; the pixel grid rounds the square's edges.
    assert int((acquisition.affine(image, scale=1.5) > 0.5).sum()) > int((image > 0.5).sum()) * 1.8


def test_acquisition_augmentation_is_seeded_and_off_by_default(images):
    config = AugmentConfig(blur=1.2, sharpen=1.0, downsample=0.5, noise=0.03, jpeg=40)
    a = random_acquisition(images, config, torch.Generator().manual_seed(5))
    b = random_acquisition(images, config, torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, images)
    assert random_acquisition(images, AugmentConfig(), torch.Generator()) is images


def test_the_study_augmentation_draws_no_extra_random_numbers(images):
    """Adding the new options must not change what the study's augmentation does to a batch."""
    generator_a, generator_b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    study = augment(images, AugmentConfig(), generator_a)
    again = augment(images, AugmentConfig(crop=0.0, blur=0.0, jpeg=0), generator_b)
    torch.testing.assert_close(study, again)
    torch.testing.assert_close(torch.rand(1, generator=generator_a), torch.rand(1, generator=generator_b))


def test_crop_zooms_in_by_up_to_the_asked_for_area():
    image = torch.zeros(64, 1, 60, 60)
    image[..., 25:35, 25:35] = 1.0
    config = AugmentConfig(rotation=0, shift=0, zoom=0, crop=0.5)
    out = augment(image, config, torch.Generator().manual_seed(0))
    areas = (out > 0.5).float().sum(dim=(1, 2, 3)).numpy()
    # A crop keeping a share a of the area enlarges a square's area by 1/a: between 1x and 2x here,
    # plus the aspect change; the square may also leave the frame.
    assert areas.max() <= 100 * 2 / 0.75 + 40 and np.median(areas) > 100


@pytest.mark.parametrize(("field", "value", "message"), [
    ("jpeg", 101, "must be a quality in"), ("crop", 1.0, "'crop' must be < 1"), ("blur", -1, "'blur' must be >= 0"),
    ("noise", 1.5, "'noise' must be < 1"),
])
def test_invalid_ranges_are_refused(field, value, message):
    with pytest.raises(ValueError, match=message):
        AugmentConfig(**{field: value})
