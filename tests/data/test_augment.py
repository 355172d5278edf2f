import pytest
import torch

from pneumo.data.augment import AugmentConfig, random_affine


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
    image = torch.zeros(1, 1, 40, 40)
    image[..., 18:22, 18:22] = 1.0
    config = AugmentConfig(rotation=0, shift=0.1, zoom=0)
    out = random_affine(image, config, torch.Generator().manual_seed(0))
    before = (image[0, 0] > 0.5).nonzero().float().mean(0)
    after = (out[0, 0] > 0.5).nonzero().float().mean(0)
    assert (after - before).abs().max() <= 0.1 * 40 + 1  # never more than 10% of the side


def test_bad_ranges():
    with pytest.raises(ValueError, match="The augmentation 'zoom' must be < 1. Got 1.5 instead."):
        AugmentConfig(zoom=1.5)
    with pytest.raises(ValueError, match="'rotation' must be >= 0"):
        AugmentConfig(rotation=-1)
