from __future__ import annotations

import math

import numpy as np
import pytest

from xray_spark.metrics import (
    auroc,
    mean_auroc,
    per_label_auroc,
    roc_curve,
    sensitivity_specificity,
    youden_threshold,
)


@pytest.mark.parametrize("seed", range(5))
def test_auroc_is_the_pairwise_probability_with_ties_as_half(seed):
    rng = np.random.default_rng(seed)
    y = rng.random(300) < 0.2
    scores = np.round(rng.random(300) + 0.3 * y, 1)  # rounding makes many ties
    pos, neg = scores[y][:, None], scores[~y][None, :]
    pairwise = ((pos > neg).sum() + 0.5 * (pos == neg).sum()) / (pos.size * neg.size)
    assert auroc(y, scores) == pytest.approx(pairwise, abs=1e-12)


def test_auroc_extremes_and_undefined():
    assert auroc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert auroc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert auroc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5
    assert math.isnan(auroc([0, 0, 0], [0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="3 labels but 2 scores"):
        auroc([0, 1, 0], [0.1, 0.2])


def test_per_label_and_mean_skip_undefined():
    y = np.array([[1, 0], [0, 0], [1, 0], [0, 0]])
    p = np.array([[0.9, 0.1], [0.2, 0.3], [0.8, 0.5], [0.1, 0.4]])
    values = per_label_auroc(y, p, ["A", "B"])
    assert values["A"] == 1.0 and math.isnan(values["B"])
    assert mean_auroc(values) == 1.0


def test_roc_curve_has_one_point_per_distinct_score_called_at_or_above():
    rng = np.random.default_rng(7)
    y = rng.random(200) < 0.3
    s = np.round(rng.random(200) + 0.4 * y, 2)
    fpr, tpr, thr = roc_curve(y, s)
    assert (fpr[0], tpr[0], thr[0]) == (0.0, 0.0, np.inf)
    np.testing.assert_allclose(thr[1:], np.unique(s)[::-1])
    np.testing.assert_allclose(tpr[1:], [(s[y] >= t).mean() for t in thr[1:]])
    np.testing.assert_allclose(fpr[1:], [(s[~y] >= t).mean() for t in thr[1:]])


def test_youden_threshold_separates_separable_scores():
    y = np.array([0, 0, 0, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.7, 0.9])
    t = youden_threshold(y, s)
    assert 0.3 < t <= 0.7
    assert sensitivity_specificity(y, s, t) == (1.0, 1.0)
    assert youden_threshold(np.zeros(3), np.array([0.1, 0.2, 0.3])) == 0.5
