"""Metric values checked against numbers worked out by hand (arithmetic in the comments)."""

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from pneumo.inference.calibration import PriorAdaptation, adapt_priors, fit_temperature
from pneumo.evaluation.metrics import _weighted_auc, bootstrap, decide, mcnemar, summarize
from pneumo.inference import softmax

# True and predicted classes (0 normal, 1 bacterial, 2 viral). Confusion matrix, rows = true:
#   [[3, 1, 0],
#    [0, 4, 1],
#    [1, 0, 2]]
TRUE = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2])
PRED = np.array([0, 0, 0, 1, 1, 1, 1, 1, 2, 0, 2, 2])


def one_hot_probs(predicted):
    probs = np.full((len(predicted), 3), 0.1)
    probs[np.arange(len(predicted)), predicted] = 0.8
    return probs


def test_summary_against_hand_computed_values():
    m = summarize(TRUE, one_hot_probs(PRED))
    assert m["confusion_matrix"] == [[3, 1, 0], [0, 4, 1], [1, 0, 2]]
    assert m["accuracy"] == pytest.approx(9 / 12)
    # Recall 3/4, 4/5, 2/3; precision equals recall here (column sums 4, 5, 3), so F1 = recall.
    assert (m["recall_normal"], m["recall_bacterial"], m["recall_viral"]) == pytest.approx((0.75, 0.8, 2 / 3))
    assert m["macro_f1"] == pytest.approx((0.75 + 0.8 + 2 / 3) / 3)
    # Specificity of normal: of 8 non-normal images, 7 are not called normal.
    assert m["specificity"]["normal"] == pytest.approx(7 / 8)
    # Pneumonia vs normal: 7 of 8 sick called pneumonia; 3 of 4 healthy called normal.
    assert m["pneumonia_sensitivity"] == pytest.approx(7 / 8)
    assert m["pneumonia_specificity"] == pytest.approx(3 / 4)
    assert m["missed_as_normal"] == {"bacterial": 0, "viral": 1}
    assert m["false_negatives"] == {"bacterial": 1, "viral": 1}
    # Loss: 9 images with p_true 0.8 and 3 with 0.1.
    assert m["loss"] == pytest.approx((9 * -math.log(0.8) + 3 * -math.log(0.1)) / 12)
    # Every confidence is 0.8 and accuracy 0.75: ECE is 0.05.
    assert m["ece"] == pytest.approx(0.05)
    # Brier: right images (0.2^2 + 2 * 0.1^2) = 0.06; wrong ones 0.9^2 + 0.8^2 + 0.1^2 = 1.46.
    assert m["brier"] == pytest.approx((9 * 0.06 + 3 * 1.46) / 12)
    assert m["classification_report"]["macro avg"]["recall"] == pytest.approx((0.75 + 0.8 + 2 / 3) / 3)


def test_weighted_auc_matches_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300).astype(bool)
    score = np.round(rng.random(300) + 0.3 * y, 2)  # rounding makes ties
    weight = rng.integers(0, 4, 300).astype(float)
    assert _weighted_auc(y, score, weight) == pytest.approx(roc_auc_score(y, score, sample_weight=weight))


def test_bootstrap_resamples_patients_not_images():
    # One patient with 100 wrong images and 100 patients with one right image each.
    y = np.zeros(200, int)
    probs = one_hot_probs(np.r_[np.ones(100, int), np.zeros(100, int)])
    patients = np.r_[np.zeros(100, int), np.arange(1, 101)]
    by_patient = bootstrap(y, probs, patients, resamples=300, seed=0)["accuracy"]
    by_image = bootstrap(y, probs, np.arange(200), resamples=300, seed=0)["accuracy"]
    # Drawing the big patient 0, 1, 2 or 3 times swings accuracy from 1.0 to about 0.25.
    assert by_patient["high"] - by_patient["low"] > 0.4
    assert by_image["high"] - by_image["low"] < 0.2


def test_bootstrap_is_seeded():
    probs = one_hot_probs(PRED)
    assert bootstrap(TRUE, probs, np.arange(12), resamples=50, seed=3) == bootstrap(TRUE, probs, np.arange(12),
                                                                                   resamples=50, seed=3)


def test_mcnemar_by_hand():
    # 8 images only A gets right, 2 only B: exact two-sided p = 2 * P(X <= 2 | n=10, 1/2) = 2 * 56 / 1024.
    a = np.array([True] * 8 + [False] * 2 + [True] * 5)
    b = np.array([False] * 8 + [True] * 2 + [True] * 5)
    result = mcnemar(a, b)
    assert (result.only_a, result.only_b) == (8, 2)
    assert result.p_value == pytest.approx(112 / 1024)
    assert mcnemar(a, a).p_value == 1.0


def test_operating_point_decides_pneumonia_first():
    probs = np.array([[0.6, 0.3, 0.1], [0.9, 0.02, 0.08]])
    assert decide(probs).tolist() == [0, 0]
    assert decide(probs, threshold=0.3).tolist() == [1, 0]  # 0.4 >= 0.3 -> pneumonia, bacterial likelier


def test_temperature_recovers_overconfidence():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (4000, 3))
    labels = np.array([rng.choice(3, p=p) for p in softmax(logits)])
    assert fit_temperature(logits * 3, labels) == pytest.approx(3, rel=0.1)


def test_prior_adaptation_recovers_shifted_priors():
    rng = np.random.default_rng(1)
    means, train_priors, test_priors = np.array([-2.0, 0.0, 2.0]), np.array([0.26, 0.49, 0.25]), np.array([0.5, 0.3, 0.2])
    labels = rng.choice(3, size=6000, p=test_priors)
    x = rng.normal(means[labels], 1.0)
    likelihood = np.exp(-0.5 * (x[:, None] - means[None]) ** 2)
    probs = likelihood * train_priors / (likelihood * train_priors).sum(1, keepdims=True)
    adjusted, priors = adapt_priors(probs, train_priors)
    assert np.abs(priors - test_priors).max() < 0.03
    nll = lambda p: -np.log(p[np.arange(len(labels)), labels]).mean()  # noqa: E731
    assert nll(adjusted) < nll(probs)


def test_bias_corrected_calibration_makes_em_work_for_a_class_weighted_model():
    """A model trained with balanced class weights has uniform implicit priors; EM fed the training
    frequencies as its priors goes wrong, EM after bias-corrected temperature scaling does not."""
    rng = np.random.default_rng(2)
    means, train_priors, test_priors = np.array([-2.0, 0.0, 2.0]), np.array([0.26, 0.49, 0.25]), np.array([0.5, 0.3, 0.2])

    def sample(priors, n):
        labels = rng.choice(3, size=n, p=priors)
        x = rng.normal(means[labels], 1.0)
        return 2.0 * -0.5 * (x[:, None] - means[None]) ** 2, labels  # uniform-prior logits, 2x overconfident

    val_logits, val_labels = sample(train_priors, 6000)
    adaptation = PriorAdaptation.fit(val_logits, val_labels)
    assert adaptation.temperature == pytest.approx(2, rel=0.1)
    np.testing.assert_allclose(adaptation.bias, np.log(train_priors / train_priors[0]), atol=0.1)
    test_logits, _ = sample(test_priors, 6000)
    _, estimated = adaptation.adapt(test_logits)
    _, naive = adapt_priors(softmax(test_logits, fit_temperature(val_logits, val_labels)), train_priors)
    assert np.abs(estimated - test_priors).max() < 0.03 < np.abs(naive - test_priors).max()


def test_prior_adaptation_of_a_model_without_a_fit_follows_its_recipe():
    metadata = {"classes": ["a", "b", "c"], "temperature": 1.5,
                "training": {"train_class_counts": [1, 2, 1], "config": {"class_weights": "balanced"}}}
    assert PriorAdaptation.of_model(metadata).source_priors == pytest.approx([1 / 3] * 3)
    nested = {**metadata, "training": {**metadata["training"], "config": {"optim": {"class_weights": "balanced"}}}}
    assert PriorAdaptation.of_model(nested).source_priors == pytest.approx([1 / 3] * 3)  # as runs record it now
    metadata["training"]["config"]["class_weights"] = "none"
    assumed = PriorAdaptation.of_model(metadata)
    assert assumed.source_priors == pytest.approx([0.25, 0.5, 0.25]) and assumed.temperature == 1.5
    fitted = PriorAdaptation(2.0, [0.0, 0.1, -0.1], [0.3, 0.4, 0.3], "validation")
    assert PriorAdaptation.of_model({**metadata, "prior_adaptation": fitted.to_dict()}) == fitted
