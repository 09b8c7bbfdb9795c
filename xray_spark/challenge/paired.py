"""Two models compared on the same films: DeLong's paired test of their AUROCs, and a patient bootstrap.

DeLong, DeLong and Clarke-Pearson (Biometrics 1988) estimate the covariance of two AUROCs
measured on the same cases from each case's placement values; Sun and Xu (IEEE Signal
Processing Letters 2014) compute those from mid-ranks in O(n log n). This is our own
implementation of that algorithm; ``tests/test_paired.py`` checks it against the values
R's pROC publishes in its own tests for the aSAH data (Turck et al. 2010): the AUROCs, their
DeLong variances and covariances, and ``roc.test``'s Z, p-value and interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from xray_spark.metrics import patient_resamples, percentile_interval


def midranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x``, ties given the mean of the ranks they span."""
    order = np.argsort(x, kind="mergesort")
    ordered = x[order]
    ranks = np.empty(len(x), dtype=np.float64)
    i = 0
    while i < len(x):
        j = i
        while j < len(x) and ordered[j] == ordered[i]:
            j += 1
        ranks[order[i:j]] = 0.5 * (i + j - 1) + 1.0
        i = j
    return ranks


def delong(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The AUROC of each row of ``scores`` (k, n) against ``y_true`` (n,), and their k x k DeLong covariance."""
    y = np.asarray(y_true).astype(bool)
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    m, n = int(y.sum()), int((~y).sum())
    if m < 2 or n < 2:
        raise ValueError(f"DeLong's variance needs at least 2 positives and 2 negatives, got {m} and {n}")
    positives, negatives = s[:, y], s[:, ~y]
    tx = np.array([midranks(row) for row in positives])
    ty = np.array([midranks(row) for row in negatives])
    tz = np.array([midranks(row) for row in np.hstack([positives, negatives])])
    aucs = tz[:, :m].sum(axis=1) / (m * n) - (m + 1.0) / (2.0 * n)
    v01 = (tz[:, :m] - tx) / n  # each positive's share of negatives scored below it
    v10 = 1.0 - (tz[:, m:] - ty) / m  # each negative's share of positives scored above it
    covariance = np.atleast_2d(np.cov(v01)) / m + np.atleast_2d(np.cov(v10)) / n
    return aucs, covariance


@dataclass(frozen=True)
class PairedTest:
    """AUROC(a) - AUROC(b) on the same films, with DeLong's interval and two-sided p-value."""

    auroc_a: float
    auroc_b: float
    difference: float
    z: float
    p_value: float
    low: float
    high: float


def _normal_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _normal_quantile(p: float) -> float:
    """The standard normal quantile (bisection on the CDF: exact to 1e-12, no SciPy needed)."""
    low, high = -40.0, 40.0
    for _ in range(200):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if _normal_cdf(mid) < p else (low, mid)
    return 0.5 * (low + high)


def delong_test(y_true: np.ndarray, score_a: np.ndarray, score_b: np.ndarray, *, level: float = 0.95) -> PairedTest:
    """DeLong's paired test of two models' AUROCs on the same films."""
    aucs, cov = delong(y_true, np.vstack([score_a, score_b]))
    difference = float(aucs[0] - aucs[1])
    variance = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    se = math.sqrt(max(variance, 0.0))
    z = difference / se if se > 0 else 0.0
    p = 2.0 * (1.0 - _normal_cdf(abs(z))) if se > 0 else 1.0
    half = _normal_quantile(0.5 + level / 2.0) * se
    return PairedTest(float(aucs[0]), float(aucs[1]), difference, z, p, difference - half, difference + half)


def bootstrap_difference_ci(
    y_true: np.ndarray,
    score_a: np.ndarray,
    score_b: np.ndarray,
    groups: np.ndarray,
    *,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """A percentile interval of AUROC(a) - AUROC(b), resampling patients (``groups``) with both models together."""
    y = np.asarray(y_true).astype(bool)
    a, b = np.asarray(score_a, np.float64), np.asarray(score_b, np.float64)
    values = []
    for rows in patient_resamples(groups, resamples, seed):
        positives = int(y[rows].sum())
        if positives < 2 or len(rows) - positives < 2:  # a resample DeLong cannot measure
            continue
        aucs, _ = delong(y[rows], np.vstack([a[rows], b[rows]]))
        values.append(float(aucs[0] - aucs[1]))
    return percentile_interval(values, level)
