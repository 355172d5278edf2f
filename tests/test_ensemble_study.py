"""scripts/ensemble_study.py's scores and scripts/finalize_ensemble.py's choice, on made-up probabilities."""

import numpy as np

from tests.test_published_figures import load_script

study = load_script("ensemble_study")
finalize = load_script("finalize_ensemble")


def one_hot(classes: np.ndarray) -> np.ndarray:
    return np.eye(3)[classes] * 0.8 + 0.2 / 3


def test_worst_middle_without_zoom_in_and_the_beyond_zoom_in_are_scored_apart():
    labels = np.arange(60) % 3
    wrong = (labels + 1) % 3
    probs = {"clean": one_hot(labels)}
    for perturbation in study.MIDDLE:
        probs[perturbation.name] = one_hot(labels)
    probs["zoom-in/middle"] = one_hot(np.where(np.arange(60) < 30, wrong, labels))  # 0.5: the worst
    probs["blur/middle"] = one_hot(np.where(np.arange(60) < 12, wrong, labels))  # 0.8: the worst without zoom-in
    probs["zoom-in/beyond"] = one_hot(np.where(np.arange(60) < 45, wrong, labels))  # 0.25
    row = study.score(probs, labels, np.arange(60))
    assert (row["worst_middle"], row["worst_middle_accuracy"]) == ("zoom-in/middle", 0.5)
    assert (row["worst_middle_without_zoom_in"], row["worst_middle_accuracy_without_zoom_in"]) == ("blur/middle", 0.8)
    assert row["zoom_in_beyond_accuracy"] == 0.25
    assert row["zoom_in_beyond_recall_normal"] == np.mean(np.arange(0, 60, 3) >= 45)  # the normal images past the 45 wrong ones


def test_a_reference_model_is_never_chosen_as_the_ensemble():
    rows = {"a": {"members": ["a"], "accuracy": 0.80, "weights_mb": 10},
            "b": {"members": ["b"], "accuracy": 0.81, "weights_mb": 10},
            "a + b": {"members": ["a", "b"], "accuracy": 0.82, "weights_mb": 20},
            "shipped (reference)": {"members": ["shipped"], "accuracy": 0.90, "weights_mb": 30, "reference": True}}
    assert finalize.choose(rows)[0] == "a + b"
    rows["shipped (reference)"]["members"] = ["x", "y"]  # an ensemble, but shipped already
    assert finalize.choose(rows)[0] == "a + b"
