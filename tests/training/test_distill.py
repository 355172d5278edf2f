"""The distillation loss and the teacher's cached probabilities, checked against their definitions."""

import hashlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pneumo.config import TrainConfig
from pneumo.data.cache import PreparedData
from pneumo.errors import ModelFileError
from pneumo.training import distill
from pneumo.training.distill import teacher_probabilities
from pneumo.training.module import Classifier


def classifier(weight: float, temperature: float) -> Classifier:
    config = TrainConfig().replace(model="cnn", teacher="a-teacher", distill_weight=weight,
                                   distill_temperature=temperature)
    return Classifier(config.to_dict())


def test_the_loss_blends_cross_entropy_with_the_softened_kl_divergence():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 3, generator=generator)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    teacher = torch.softmax(torch.randn(6, 3, generator=generator), dim=1)
    weight, temperature = 0.7, 2.0

    loss = classifier(weight, temperature)._loss(logits, labels, 0.0, teacher)

    # By hand, in numpy: (1 - w) CE + w T^2 KL(teacher_T || student_T), the KL averaged over the batch.
    x, t = logits.double().numpy(), teacher.double().numpy()
    student_t = np.exp(x / temperature) / np.exp(x / temperature).sum(1, keepdims=True)
    teacher_t = t ** (1 / temperature) / (t ** (1 / temperature)).sum(1, keepdims=True)
    kl = (teacher_t * (np.log(teacher_t) - np.log(student_t))).sum(1).mean()
    cross_entropy = -np.log(np.exp(x) / np.exp(x).sum(1, keepdims=True))[np.arange(6), labels.numpy()].mean()
    assert float(loss) == pytest.approx((1 - weight) * cross_entropy + weight * temperature ** 2 * kl, rel=1e-5)


def test_a_student_that_answers_like_its_teacher_pays_only_the_label_term():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 1.5, 0.3]])
    labels = torch.tensor([0, 2])
    module = classifier(0.5, 3.0)
    matching = module._loss(logits, labels, 0.0, torch.softmax(logits, dim=1))
    assert float(matching) == pytest.approx(0.5 * float(F.cross_entropy(logits, labels)), rel=1e-5)
    # The soft term pulls the logits toward the teacher: its gradient vanishes where they agree.
    pulled = logits.clone().requires_grad_(True)
    classifier(1.0, 3.0)._loss(pulled, labels, 0.0, torch.softmax(logits, dim=1)).backward()
    assert pulled.grad.abs().max() < 1e-6
    elsewhere = logits.clone().requires_grad_(True)
    classifier(1.0, 3.0)._loss(elsewhere, labels, 0.0, torch.softmax(-logits, dim=1)).backward()
    assert elsewhere.grad.abs().max() > 1e-2


def test_the_teacher_labels_each_image_once_and_every_later_seed_reads_its_file(monkeypatch, tmp_path):
    class Teacher:
        model_id, temperature, size = "teacher", 1.5, 8
        metadata = {"weights_sha256": "ab" * 32}
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))

    rng = np.random.default_rng(0)
    names = np.array([f"p{i}.jpeg" for i in range(5)])
    data = PreparedData(images=rng.integers(0, 256, (5, 8, 8), dtype=np.uint8), labels=np.array([0, 1, 2, 0, 1]),
                        patients=names, splits=np.array(["train"] * 5), paths=names,
                        sha256=np.array([f"{i:064x}" for i in range(5)]))
    monkeypatch.setattr(distill, "load_bundle", lambda path: Teacher)
    monkeypatch.setattr(distill, "resolve_model", lambda name: name)
    calls = []
    monkeypatch.setattr(distill, "predict_logits",
                        lambda model, images: calls.append(len(images)) or np.zeros((len(images), 3)) + [1.0, 0, 0])

    indices = np.array([0, 2, 4])
    first, description = teacher_probabilities("teacher", data, indices, data_path=tmp_path, cache_dir=tmp_path)
    again, _ = teacher_probabilities("teacher", data, indices, data_path=tmp_path, cache_dir=tmp_path)
    other, _ = teacher_probabilities("teacher", data, np.array([1, 3]), data_path=tmp_path, cache_dir=tmp_path)

    assert calls == [3, 2]  # the second call for the same images read the cache
    expected = np.exp([1 / 1.5, 0, 0]) / np.exp([1 / 1.5, 0, 0]).sum()  # softmax at the teacher's temperature
    np.testing.assert_allclose(first, np.tile(expected, (3, 1)), rtol=1e-6)
    np.testing.assert_array_equal(first, again)
    assert other.shape == (2, 3) and description["images"] == 3
    assert len(list((tmp_path / "teacher").glob("teacher-*.npy"))) == 2


DESCRIBED = {"id": "teacher", "weights_sha256": "ab" * 32, "temperature": 1.5, "images": 4}


def prepared(count: int) -> PreparedData:
    names = np.array([f"p{i}.jpeg" for i in range(count)])
    return PreparedData(images=np.zeros((count, 8, 8), dtype=np.uint8), labels=np.arange(count) % 3,
                        patients=names, splits=np.array(["train"] * count), paths=names,
                        sha256=np.array([f"{i:064x}" for i in range(count)]))


def test_a_labels_file_teaches_as_its_teacher_did_in_the_students_order(monkeypatch, tmp_path):
    data = prepared(4)
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.5, 0.3, 0.2]], dtype=np.float32)
    labels = tmp_path / "teacher.NPZ"  # the suffix in any case
    distill.write_teacher_labels(labels, probabilities, data.sha256, DESCRIBED)
    monkeypatch.setattr(distill, "load_bundle", lambda path: pytest.fail("a labels file needs no weights"))

    read, description = teacher_probabilities(str(labels), data, np.array([3, 1]), data_path=tmp_path,
                                              cache_dir=tmp_path)

    np.testing.assert_array_equal(read, probabilities[[3, 1]])
    assert {key: description[key] for key in ("id", "weights_sha256", "temperature")} == \
        {"id": "teacher", "weights_sha256": "ab" * 32, "temperature": 1.5}
    assert description["images"] == 2 and description["labels_file"] == "teacher.NPZ"
    assert description["labels_sha256"] == hashlib.sha256(labels.read_bytes()).hexdigest()


@pytest.mark.parametrize(("write", "message"), [
    (None, r"missing\.npz: no such teacher's labels file"),
    (lambda path: path.write_bytes(b"not a zip"), r"bad\.npz: not a teacher's labels file"),
    (lambda path: distill.write_teacher_labels(path, np.full((4, 3), 1 / 3), prepared(4).sha256, {"id": "t"}),
     r"bad\.npz: its teacher's description lacks temperature, weights_sha256"),
    (lambda path: distill.write_teacher_labels(path, np.full((4, 2), 0.5), prepared(4).sha256, DESCRIBED),
     r"bad\.npz: holds \(4, 2\) probabilities"),
    (lambda path: distill.write_teacher_labels(path, np.full((4, 3), np.nan), prepared(4).sha256, DESCRIBED),
     r"bad\.npz: holds rows that are not probabilities"),
    (lambda path: distill.write_teacher_labels(path, np.full((1, 3), 1 / 3), prepared(1).sha256, DESCRIBED),
     r"bad\.npz: lacks 3 of the 4 training images"),
])
def test_a_labels_file_that_cannot_teach_is_refused_with_the_reason(tmp_path, write, message):
    labels = tmp_path / ("missing.npz" if write is None else "bad.npz")
    if write:
        write(labels)
    with pytest.raises(ModelFileError, match=message):
        teacher_probabilities(labels, prepared(4), np.arange(4), data_path=tmp_path, cache_dir=tmp_path)
