"""Operating points with a guarantee and conformal class sets: arithmetic checked against cases computed by hand."""

import numpy as np
import pytest

from pneumo.errors import PneumoError
from pneumo.fitting.guarantee import conformal_scores, guaranteed_threshold, minimum_positives
from pneumo.inference.conformal import class_sets, class_thresholds, set_name


def probs_for(pneumonia_scores, normals=0):
    """Labels and (N, 3) probabilities whose P(pneumonia) are the given scores (pneumonia images, bacterial), plus
    ``normals`` normal images with P(pneumonia) 0.01."""
    scores = np.asarray(pneumonia_scores, np.float64)
    labels = np.r_[np.ones(len(scores), int), np.zeros(normals, int)]
    p_normal = np.r_[1 - scores, np.full(normals, 0.99)]
    return labels, np.c_[p_normal, (1 - p_normal) * 0.6, (1 - p_normal) * 0.4]


def test_the_fewest_labels_each_guarantee_needs():
    # Conformal: floor((n + 1) * 0.03) >= 1 first at n + 1 = 34. PAC at 95%: 0.97^n <= 0.05 first at n = 99
    # (0.97^98 = 0.0505, 0.97^99 = 0.0490).
    assert minimum_positives(0.97, "conformal") == 33
    assert minimum_positives(0.97, "pac", 0.95) == 99
    assert minimum_positives(0.90, "conformal") == 9  # floor(10 * 0.1) = 1
    assert minimum_positives(0.999999, "pac", 0.95) == 2995731  # log(0.05) / log(0.999999), at once


def test_conformal_cut_off_is_the_kth_lowest_pneumonia_score():
    scores = np.linspace(0.05, 0.99, 99)  # n = 99: k = floor(100 * 0.03) = 3, the third lowest
    labels, probs = probs_for(scores, normals=10)
    chosen = guaranteed_threshold(labels, probs, target=0.97)
    assert chosen.threshold == pytest.approx(scores[2]) and chosen.misses_allowed == 2 and chosen.positives == 99
    assert "expected pneumonia sensitivity >= 0.97" in chosen.promise()


def test_pac_cut_off_allows_fewer_misses_than_conformal():
    # n = 200 at 0.97 and 95%: P(Binomial(200, 0.03) <= 1) = 0.0162 <= 0.05 and P(<= 2) = 0.0593 > 0.05, so k - 1 = 1:
    # the second lowest score. Conformal allows floor(201 * 0.03) - 1 = 5 misses.
    scores = np.linspace(0.05, 0.99, 200)
    labels, probs = probs_for(scores)
    pac = guaranteed_threshold(labels, probs, target=0.97, kind="pac", confidence=0.95)
    assert pac.misses_allowed == 1 and pac.threshold == pytest.approx(scores[1])
    assert guaranteed_threshold(labels, probs, target=0.97).misses_allowed == 5


def test_too_few_pneumonia_cases_are_refused_with_the_number_needed():
    labels, probs = probs_for(np.linspace(0.2, 0.9, 32), normals=40)
    with pytest.raises(PneumoError, match="a conformal cut-off for sensitivity 0.97 needs at least 33 labelled "
                                          "pneumonia images; got 32"):
        guaranteed_threshold(labels, probs, target=0.97)
    with pytest.raises(PneumoError, match="at confidence 0.95 needs at least 99"):
        guaranteed_threshold(labels, probs, target=0.97, kind="pac")
    with pytest.raises(ValueError, match="The 'kind' of guarantee must be one of"):
        guaranteed_threshold(labels, probs, target=0.97, kind="bayes")


def test_each_patient_counts_once_by_its_lowest_score():
    # Ten children with two images each: the lower of each pair counts, so the cut-off (k = floor(11 * 0.1) = 1) is
    # the lowest of the ten lower scores, not of all twenty.
    low, high = np.linspace(0.3, 0.8, 10), np.linspace(0.5, 0.95, 10)
    labels, probs = probs_for(np.r_[low, high])
    patients = np.r_[np.arange(10), np.arange(10)].astype(str)
    chosen = guaranteed_threshold(labels, probs, target=0.9, patients=patients)
    assert chosen.positives == 10 and chosen.threshold == pytest.approx(0.3)


def test_expected_sensitivity_holds_over_many_draws():
    """The promise itself: over many calibration draws, the mean sensitivity on fresh images is >= the target."""
    rng = np.random.default_rng(0)
    target, achieved = 0.9, []
    for _ in range(400):
        calibration, fresh = rng.beta(5, 2, 40), rng.beta(5, 2, 2000)
        labels, probs = probs_for(calibration)
        threshold = guaranteed_threshold(labels, probs, target=target).threshold
        achieved.append((fresh >= threshold).mean())
    assert np.mean(achieved) >= target - 0.005  # the standard error of the mean over 400 draws is about 0.002


def test_conformal_thresholds_by_hand():
    # Class 0 has 9 scores: k = ceil(10 * 0.8) = 8, the 8th smallest; class 1 has 3: k = ceil(4 * 0.8) = 4 > 3, so
    # the class is always included; class 2 has 4: k = ceil(5 * 0.8) = 4, the largest.
    scores = [[0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09], [0.1, 0.2, 0.3], [0.1, 0.2, 0.3, 0.4]]
    np.testing.assert_allclose(class_thresholds(scores, 0.2), [0.08, 1.0, 0.4])
    sets = class_sets(np.array([[0.95, 0.03, 0.02], [0.5, 0.2, 0.3]]), np.array([0.08, 0.5, 0.75]))
    assert sets.tolist() == [[True, False, False], [False, False, True]]  # 1 - p: [.05 .97 .98], [.5 .8 .7]
    with pytest.raises(ValueError, match="The conformal 'alpha' must be in"):
        class_thresholds(scores, 1.5)


def test_class_conditional_coverage_on_synthetic_classes():
    """Three known classes: each class's coverage on fresh images is within 2 points of 1 - alpha."""
    rng = np.random.default_rng(1)

    def draw(count):
        labels = rng.integers(0, 3, count)
        logits = rng.normal(0, 1.2, (count, 3))
        logits[np.arange(count), labels] += 1.5
        exp = np.exp(logits)
        return labels, exp / exp.sum(1, keepdims=True)

    labels, probs = draw(3000)
    thresholds = class_thresholds(conformal_scores(labels, probs, 3), 0.1)
    fresh_labels, fresh_probs = draw(30000)
    sets = class_sets(fresh_probs, thresholds)
    for c in range(3):
        coverage = sets[fresh_labels == c, c].mean()
        assert abs(coverage - 0.9) <= 0.02, (c, coverage)


@pytest.mark.parametrize("members, text", [
    ([False, True, True], "bacterial or viral pneumonia"), ([False, False, True], "viral pneumonia"),
    ([True, False, False], "normal"), ([True, True, False], "normal or bacterial"),
    ([True, True, True], "any of the three (the model cannot narrow it down)"),
    ([False, False, False], "none of the classes (an unusual image)")])
def test_set_names(members, text):
    assert set_name(np.array(members)) == text
