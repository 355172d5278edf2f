import pytest
import torch

from pneumo.errors import ModelFileError
from pneumo.models import create_model, get_spec, list_models
from pneumo.models.bundle import load_bundle, save_bundle


@pytest.mark.parametrize("name", list_models())
def test_two_batch_smoke(name):
    torch.manual_seed(0)
    model = create_model(name)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(2):
        images, labels = torch.rand(4, 1, 64, 64), torch.tensor([0, 1, 2, 1])
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert torch.isfinite(loss)
    model.eval()
    assert model(torch.rand(3, 1, 64, 64)).shape == (3, 3)
    assert isinstance(model.get_submodule(get_spec(name).cam_layer), torch.nn.Module)


def test_unknown_model_suggests_a_name():
    with pytest.raises(ValueError, match=r"Unknown model 'mobilenetv2'. Did you mean 'mobilenet_v2'\? Available models: cnn, "):
        create_model("mobilenetv2")


def test_shared_pretrained_file_loads_strictly(shared_weights):
    model = create_model("mobilenet_v2", pretrained=str(shared_weights))
    state = torch.load(shared_weights, weights_only=True)
    torch.testing.assert_close(model.net.features[0][0].weight, state["features.0.0.weight"])
    assert model(torch.rand(1, 1, 128, 128)).shape == (1, 3)


def test_wrong_pretrained_file_names_keys(shared_weights):
    with pytest.raises(ModelFileError, match=r"does not fit the resnet18 ImageNet layout: 122 missing keys \(conv1.weight"):
        create_model("resnet18", pretrained=str(shared_weights))


def test_pretrained_file_that_is_not_a_state_dict(tmp_path):
    bad = tmp_path / "weights.pth"
    bad.write_text("not weights")
    with pytest.raises(ModelFileError, match=r"weights.pth: not a PyTorch state_dict file"):
        create_model("mobilenet_v2", pretrained=str(bad))
    with pytest.raises(ModelFileError, match="pretrained weights file not found"):
        create_model("mobilenet_v2", pretrained=str(tmp_path / "missing.pth"))


def test_cnn_has_no_pretrained_weights():
    with pytest.raises(ValueError, match="'cnn' model has no pretrained weights"):
        create_model("cnn", pretrained="imagenet")


def test_bundle_round_trip(tmp_path):
    model = create_model("cnn").eval()
    metadata = save_bundle(tmp_path / "model.pt", model, model_name="cnn", size=128, id="x")
    # A plain dict of tensors and strings: loads without arbitrary unpickling.
    raw = torch.load(tmp_path / "model.pt", weights_only=True)
    assert raw["format"] == "pneumo-bundle"
    bundle = load_bundle(tmp_path)
    assert bundle.metadata["weights_sha256"] == metadata["weights_sha256"]
    assert bundle.classes == ["NORMAL", "Bacterial Pneumonia", "Viral Pneumonia"] and bundle.size == 128
    images = torch.rand(2, 1, 128, 128)
    torch.testing.assert_close(bundle.model(images), model(images))


def test_bundle_errors(tmp_path):
    with pytest.raises(ModelFileError, match="no model bundle here"):
        load_bundle(tmp_path)
    with pytest.raises(ModelFileError, match=r"^cnn: no such file or folder, and no shipped model of that name; "
                                             r"pass .*\(pneumo-cnn, pneumo-ensemble, pneumo-mobilenet\)"):
        load_bundle("cnn")
    (tmp_path / "model.pt").write_bytes(b"garbage")
    with pytest.raises(ModelFileError, match="not a loadable pneumo bundle"):
        load_bundle(tmp_path)
    torch.save({"weights": torch.zeros(1)}, tmp_path / "model.pt")
    with pytest.raises(ModelFileError, match="not a pneumo model bundle"):
        load_bundle(tmp_path)


def test_bundle_is_stored_in_the_standard_layout(tmp_path):
    """Training and inference keep weights in channels_last; the bundle file must not depend on that."""
    model = create_model("cnn")
    standard, channels_last = tmp_path / "standard" / "model.pt", tmp_path / "channels_last" / "model.pt"
    save_bundle(standard, model, model_name="cnn", size=128)
    model.to(memory_format=torch.channels_last)
    save_bundle(channels_last, model, model_name="cnn", size=128)
    assert standard.read_bytes() == channels_last.read_bytes()
    state = torch.load(channels_last, weights_only=True)["state_dict"]
    assert all(tensor.is_contiguous() for tensor in state.values())
