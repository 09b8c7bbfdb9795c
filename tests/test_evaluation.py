from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from xray_spark.evaluation import (
    auroc,
    mean_auroc,
    per_label_auroc,
    roc_curve,
    sensitivity_specificity,
    youden_threshold,
)


@pytest.mark.parametrize("seed", range(5))
def test_auroc_agrees_with_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.random(300) < 0.2
    scores = np.round(rng.random(300) + 0.3 * y, 1)  # rounding makes many ties
    assert auroc(y, scores) == pytest.approx(roc_auc_score(y, scores), abs=1e-12)


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


def test_roc_curve_matches_sklearn():
    rng = np.random.default_rng(7)
    y = rng.random(200) < 0.3
    s = np.round(rng.random(200) + 0.4 * y, 2)
    fpr, tpr, thr = roc_curve(y, s)
    sk_fpr, sk_tpr, sk_thr = sk_roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    np.testing.assert_allclose(thr[1:], sk_thr[1:])


def test_youden_threshold_separates_separable_scores():
    y = np.array([0, 0, 0, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.7, 0.9])
    t = youden_threshold(y, s)
    assert 0.3 < t <= 0.7
    assert sensitivity_specificity(y, s, t) == (1.0, 1.0)
    assert youden_threshold(np.zeros(3), np.array([0.1, 0.2, 0.3])) == 0.5
