import numpy as np
import pytest

from pneumo.data.cache import PreparedData
from pneumo.data.splits import load_split, make_split, save_split


def fake_data(patients: int = 120, per_patient: int = 3, seed: int = 0, test: int = 0) -> PreparedData:
    rng = np.random.default_rng(seed)
    labels = np.repeat(rng.integers(0, 3, patients), per_patient)
    ids = np.repeat([f"p{i}" for i in range(patients)], per_patient)
    n = len(labels)
    splits = np.array(["train"] * (n - test) + ["test"] * test)
    return PreparedData(np.zeros((n, 4, 4), np.uint8), labels, ids, splits,
                        np.array([f"f{i}.jpeg" for i in range(n)]), np.array([f"{i:064x}" for i in range(n)]))


def test_grouped_split_keeps_patients_on_one_side():
    data = fake_data()
    split = make_split(data, method="grouped", seed=3)
    assert split.patient_overlap(data.patients) == {"train/val": 0, "train/test": 0, "val/test": 0}
    share = (split.roles == "val").mean()
    assert 0.15 < share < 0.25
    counts = split.counts(data.labels)
    # Stratified: each class is about 20% validation.
    for c in range(3):
        assert 0.1 < counts["val"][c] / (counts["val"][c] + counts["train"][c]) < 0.3


def test_grouped_split_is_deterministic_for_a_seed():
    data = fake_data()
    np.testing.assert_array_equal(make_split(data, seed=5).roles, make_split(data, seed=5).roles)
    assert not np.array_equal(make_split(data, seed=5).roles, make_split(data, seed=6).roles)


def test_random_split_leaks_patients():
    data = fake_data()
    split = make_split(data, method="random", seed=0)
    assert split.patient_overlap(data.patients)["train/val"] > 0


def test_holdout_carves_an_internal_test_set():
    data = fake_data()
    split = make_split(data, holdout=0.15, seed=0)
    assert (split.roles == "test").mean() >= 0.15
    assert split.patient_overlap(data.patients) == {"train/val": 0, "train/test": 0, "val/test": 0}


def test_archive_test_split_is_used_and_holdout_refused():
    data = fake_data(test=30)
    split = make_split(data)
    assert (split.roles[-30:] == "test").all()
    with pytest.raises(ValueError, match="--holdout applies only when it is absent"):
        make_split(data, holdout=0.2)


def test_unknown_method():
    with pytest.raises(ValueError, match=r"must be one of \('grouped', 'random'\). Got 'kfold' instead."):
        make_split(fake_data(), method="kfold")


def test_save_and_load_round_trip(tmp_path):
    data = fake_data()
    split = make_split(data, holdout=0.2, seed=1)
    save_split(tmp_path / "split.csv", split, data)
    np.testing.assert_array_equal(load_split(tmp_path / "split.csv", data).roles, split.roles)
