"""AUROC, ROC curves, operating points and a patient-level bootstrap.

AUROC and the ROC curve are scikit-learn's (``roc_auc_score``, ``roc_curve``): exact and
tie-aware (tied scores count one half). AUROC is undefined when a finding has no positive
or no negative example; those come back as NaN and are left out of the mean. The
bootstrap resamples patients, not images, because a patient's follow-up films are
correlated.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from types import ModuleType

import numpy as np


def _sk() -> ModuleType:
    """``sklearn.metrics``, imported on first use: its import is a visible part of a job's start."""
    from sklearn import metrics

    return metrics


def auroc(y_true: Sequence[float] | np.ndarray, y_score: Sequence[float] | np.ndarray) -> float:
    """Area under the ROC curve of one binary label; NaN when only one class is present."""
    y = np.asarray(y_true).astype(bool).ravel()
    s = np.asarray(y_score, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"auroc: {y.size} labels but {s.size} scores")
    if y.all() or not y.any():
        return float("nan")
    return float(_sk().roc_auc_score(y, s))


def per_label_auroc(y_true: np.ndarray, y_score: np.ndarray, labels: Sequence[str]) -> dict[str, float]:
    """AUROC of each column, by label name."""
    y_true = np.asarray(y_true)
    y_score = np.asarray(y_score)
    if y_true.shape != y_score.shape or y_true.shape[1] != len(labels):
        raise ValueError(f"per_label_auroc: labels {y_true.shape}, scores {y_score.shape}, {len(labels)} label names")
    return {name: auroc(y_true[:, i], y_score[:, i]) for i, name in enumerate(labels)}


def mean_auroc(values: dict[str, float]) -> float:
    """The mean over the findings whose AUROC is defined (NaN if none is)."""
    defined = [v for v in values.values() if not math.isnan(v)]
    return float(np.mean(defined)) if defined else float("nan")


def roc_curve(y_true: np.ndarray, y_score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate, thresholds), one point per distinct score.

    A study is called positive when its score is >= the threshold. The first point is
    (0, 0) with threshold +inf. A label with one class gives NaN rates for the missing class.
    """
    y = np.asarray(y_true).astype(bool).ravel()
    s = np.asarray(y_score, dtype=np.float64).ravel()
    import warnings

    with warnings.catch_warnings():  # one class: sklearn warns and returns NaN rates
        warnings.simplefilter("ignore")
        fpr, tpr, thresholds = _sk().roc_curve(y, s, drop_intermediate=False)
    return fpr, tpr, thresholds


def youden_threshold(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """The score threshold that maximises sensitivity + specificity - 1 (Youden's J).

    0.5 when the label has a single class (no operating point can be chosen from it).
    """
    y = np.asarray(y_true).astype(bool)
    if y.all() or not y.any():
        return 0.5
    fpr, tpr, thresholds = roc_curve(y, y_score)
    j = tpr - fpr
    best = int(np.argmax(j[1:])) + 1  # skip the +inf point
    return float(thresholds[best])


def bootstrap_auroc_ci(
    y_true: np.ndarray,
    y_score: np.ndarray,
    groups: np.ndarray,
    *,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """A percentile bootstrap interval of the AUROC, resampling ``groups`` (patients), not images.

    A patient's follow-up films are correlated; resampling images would make the interval
    too narrow. Resamples in which the label has one class only are skipped.
    """
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(y_score, dtype=np.float64)
    values = [auroc(y[rows], s[rows]) for rows in patient_resamples(groups, resamples, seed)]
    return percentile_interval([v for v in values if not math.isnan(v)], level)


def patient_resamples(groups: np.ndarray, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Row indices of ``resamples`` bootstrap resamples of the groups (patients), each drawn with all its rows."""
    unique, index = np.unique(np.asarray(groups), return_inverse=True)
    members = [np.flatnonzero(index == g) for g in range(len(unique))]
    rng = np.random.default_rng(seed)
    for _ in range(resamples):
        yield np.concatenate([members[g] for g in rng.integers(0, len(unique), size=len(unique))])


def percentile_interval(values: Sequence[float], level: float) -> tuple[float, float]:
    """The central ``level`` interval of ``values`` (NaN, NaN when there are none)."""
    if not len(values):
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2.0
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1.0 - alpha))


def sensitivity_specificity(y_true: np.ndarray, y_score: np.ndarray, threshold: float) -> tuple[float, float]:
    y = np.asarray(y_true).astype(bool)
    called = np.asarray(y_score) >= threshold
    pos = y.sum()
    neg = (~y).sum()
    sens = float((called & y).sum() / pos) if pos else float("nan")
    spec = float((~called & ~y).sum() / neg) if neg else float("nan")
    return sens, spec


def brier_score(y_true: np.ndarray, y_prob: np.ndarray) -> float:
    """Mean squared difference between the probability and the 0/1 label (NaN for no rows)."""
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_prob, dtype=np.float64)
    return float(np.mean((p - y) ** 2)) if len(y) else float("nan")


def calibration_bins(y_true: np.ndarray, y_prob: np.ndarray, bins: int = 10) -> list[tuple[float, float, int]]:
    """(mean probability, observed frequency, images) per non-empty bin of equal width on [0, 1]."""
    y = np.asarray(y_true, dtype=np.float64)
    p = np.clip(np.asarray(y_prob, dtype=np.float64), 0.0, 1.0)
    index = np.minimum((p * bins).astype(int), bins - 1)
    out = []
    for b in range(bins):
        members = index == b
        n = int(members.sum())
        if n:
            out.append((float(p[members].mean()), float(y[members].mean()), n))
    return out


def expected_calibration_error(y_true: np.ndarray, y_prob: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: the image-weighted mean |observed frequency - mean probability| over bins."""
    table = calibration_bins(y_true, y_prob, bins)
    total = sum(n for _, _, n in table)
    return float(sum(n * abs(freq - mean) for mean, freq, n in table) / total) if total else float("nan")
