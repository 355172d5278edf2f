import pytest
import torch

from pneumo.data.augment import AugmentConfig, augment, random_affine, random_photometric


def test_shape_and_determinism():
    images = torch.rand(6, 1, 32, 32)
    a = random_affine(images, AugmentConfig(), torch.Generator().manual_seed(0))
    b = random_affine(images, AugmentConfig(), torch.Generator().manual_seed(0))
    assert a.shape == images.shape
    torch.testing.assert_close(a, b)


def test_each_image_gets_its_own_transform():
    images = torch.rand(1, 1, 32, 32).expand(4, -1, -1, -1)
    out = random_affine(images, AugmentConfig(), torch.Generator().manual_seed(1))
    assert not torch.allclose(out[0], out[1])


def test_disabled_augmentation_is_identity():
    images = torch.rand(2, 1, 16, 16)
    assert random_affine(images, AugmentConfig(0, 0, 0), torch.Generator()) is images


def test_pure_shift_moves_content_by_the_expected_pixels():
    images = torch.zeros(16, 1, 40, 40)
    images[..., 18:22, 18:22] = 1.0
    config = AugmentConfig(rotation=0, shift=0.1, zoom=0)
    out = random_affine(images, config, torch.Generator().manual_seed(0))
    before = (images[0, 0] > 0.5).nonzero().float().mean(0)
    moves = torch.stack([(image[0] > 0.5).nonzero().float().mean(0) - before for image in out])
    assert moves.abs().max() <= 0.1 * 40 + 1  # never more than 10% of the side
    assert moves.abs().max() >= 2 and (moves.abs().sum(1) > 0.5).sum() >= 12  # it does move them, by varying amounts
    assert moves[:, 0].std() > 0.5 and moves[:, 1].std() > 0.5  # in both directions


def test_intensity_changes_stay_in_range_and_are_seeded():
    images = torch.rand(8, 1, 24, 24)
    config = AugmentConfig(0, 0, 0, brightness=0.2, contrast=0.3, gamma=0.5)
    a = random_photometric(images, config, torch.Generator().manual_seed(3))
    b = random_photometric(images, config, torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)
    assert a.min() >= 0 and a.max() <= 1 and not torch.allclose(a, images)


def test_brightness_alone_shifts_each_image_by_one_amount_within_range():
    images = torch.full((16, 1, 8, 8), 0.5)
    out = random_photometric(images, AugmentConfig(0, 0, 0, brightness=0.1), torch.Generator().manual_seed(0))
    shift = out - images
    assert torch.allclose(shift, shift[:, :, :1, :1].expand_as(shift))  # one amount per image
    assert shift.abs().max() <= 0.1 + 1e-6 and shift.flatten(1)[:, 0].unique().numel() == 16


def test_gamma_keeps_the_order_of_pixel_values():
    ramp = torch.linspace(0, 1, 64).view(1, 1, 8, 8).expand(4, -1, -1, -1)
    out = random_photometric(ramp, AugmentConfig(0, 0, 0, gamma=1.0), torch.Generator().manual_seed(0))
    assert (out.flatten(1).diff(dim=1) >= 0).all()


def test_study_augmentation_is_unchanged_by_the_intensity_options():
    """Without intensity options, augment() draws the same numbers as the study's affine transform."""
    images = torch.rand(4, 1, 16, 16)
    torch.testing.assert_close(augment(images, AugmentConfig(), torch.Generator().manual_seed(5)),
                               random_affine(images, AugmentConfig(), torch.Generator().manual_seed(5)))


def test_tight_framing_zooms_half_of_the_images_in_about_the_centre():
    """A centred square grows by up to 1+framing in each side in about half of the images and stays centred."""
    images = torch.zeros(400, 1, 64, 64)
    images[..., 24:40, 24:40] = 1.0  # 16 x 16 px
    out = random_affine(images, AugmentConfig(0, 0, 0, framing=0.5), torch.Generator().manual_seed(0))
    side = (out > 0.5).flatten(1).sum(1).float().sqrt()
    assert 0.35 < (side > 16).float().mean() < 0.6
    assert side.min() == 16 and side.max() <= 16 * 1.5
    rows, columns = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    weights = out[:, 0] / out[:, 0].sum((1, 2), keepdim=True)
    centre = torch.stack([(weights * rows).sum((1, 2)), (weights * columns).sum((1, 2))], 1)
    torch.testing.assert_close(centre, torch.full_like(centre, 31.5), atol=0.25, rtol=0)


def test_bad_ranges():
    with pytest.raises(ValueError, match="The augmentation 'zoom' must be < 1. Got 1.5 instead."):
        AugmentConfig(zoom=1.5)
    with pytest.raises(ValueError, match="'rotation' must be >= 0"):
        AugmentConfig(rotation=-1)
    with pytest.raises(ValueError, match="'contrast' must be < 1"):
        AugmentConfig(contrast=1.0)
    with pytest.raises(ValueError, match="'framing' must be < 1"):
        AugmentConfig(framing=1.0)
