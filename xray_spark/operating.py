"""Operating points and calibration, fitted on the validation split when a model is kept.

Per finding:

* **Calibration** by Platt scaling: ``p = 1 / (1 + exp(-(a * logit(raw) + b)))``, fitted by
  Newton's method on the validation scores with Platt's smoothed targets
  (``(N+ + 1) / (N+ + 2)`` for positives, ``1 / (N- + 2)`` for negatives), so that a
  validation split with a handful of positives cannot push probabilities to 0 or 1. Two
  parameters per finding: isotonic regression would follow the noise of 5-15 positives.
  Monotone, so it changes no AUROC and no ranking.
* **Threshold** on the calibrated probability, by a rule: ``prevalence`` (the default:
  call as many films as have the finding, in expectation: the threshold where
  ``pi * sensitivity + (1 - pi) * (1 - specificity) = pi``, i.e. as many false calls as
  missed films, with sensitivity and specificity measured on the validation split and the
  prevalence ``pi`` on the train and validation splits together), ``youden``
  (sensitivity + specificity - 1 at its highest), ``sensitivity:<x>`` (the highest
  threshold that keeps that sensitivity), ``specificity:<x>`` (the lowest that keeps that
  specificity) or ``precision:<x>`` (of the thresholds whose precision reaches x, the
  highest of those with the best sensitivity; where none reaches it, the one of highest
  precision, and ``rule_met`` is false). Why ``prevalence``, and why it takes ``pi`` from
  more than the validation split: findings cluster by patient, and a demo validation
  split of ~120 patients held 3-30 films of a finding from 3-20 patients, so its own
  prevalence was off by up to a factor 2 from the test split's; sensitivity and
  specificity do not depend on the prevalence of the split they are measured on. On the
  demo, Youden's point called rare findings in 2-9 times their prevalence; ``precision:0.6``
  2-3 times for three findings with over 20 test positives; calling the validation split's
  own count of positives 0.66-1.39 times; this rule 0.77-1.13 times.
* A finding with fewer than ``min_positives`` validation positives gets no threshold: its
  operating point is ``not calibrated``, it is reported and never called positive. Its
  probability is Platt-scaled all the same where validation has a positive (two
  parameters and smoothed targets hold with few positives; the raw output of a model
  trained with a class-weighted loss is far from a probability: on the demo, an ECE of
  0.13-0.31 for the three findings with 2-4 validation positives).

Validation sensitivity and specificity come with percentile bootstrap intervals
(resampling validation images).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from xray_spark.metrics import roc_curve, sensitivity_specificity, youden_threshold

RULES = ("prevalence", "youden", "sensitivity", "specificity", "precision")
EPS = 1e-6
CALIBRATED, NOT_CALIBRATED = "calibrated", "not calibrated"


@dataclasses.dataclass(frozen=True)
class Rule:
    kind: str
    value: float | None = None

    def __str__(self) -> str:
        return self.kind if self.value is None else f"{self.kind}:{self.value:g}"


def parse_rule(text: str) -> Rule:
    """``prevalence``, ``youden``, ``sensitivity:0.9``, ``specificity:0.95`` or ``precision:0.6``; else ValueError."""
    kind, _, value = str(text).strip().partition(":")
    if kind not in RULES:
        raise ValueError(
            f"unknown threshold rule {text!r}: use one of prevalence, youden, sensitivity:X, specificity:X, precision:X"
        )
    if kind in ("youden", "prevalence"):
        if value:
            raise ValueError(f"threshold rule {text!r}: {kind} takes no value")
        return Rule(kind)
    try:
        x = float(value)
    except ValueError:
        raise ValueError(f"threshold rule {text!r}: {kind} needs a number in (0, 1), e.g. {kind}:0.9") from None
    if not 0 < x < 1:
        raise ValueError(f"threshold rule {text!r}: the value must be in (0, 1)")
    return Rule(kind, x)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    return np.log(p / (1 - p))


def fit_platt(y: np.ndarray, raw: np.ndarray, iterations: int = 100) -> tuple[float, float]:
    """(a, b) of Platt scaling on logit(raw), with smoothed targets; Newton steps with halving."""
    y = np.asarray(y).astype(bool)
    x = _logit(raw)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    t = np.where(y, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))

    def loss(a: float, b: float) -> float:
        z = a * x + b
        return float(np.sum(np.logaddexp(0, z) - t * z))

    a, b = 1.0, 0.0
    current = loss(a, b)
    for _ in range(iterations):
        s = 1 / (1 + np.exp(-(a * x + b)))
        g = np.array([np.sum((s - t) * x), np.sum(s - t)])
        w = s * (1 - s)
        h = np.array([[np.sum(w * x * x), np.sum(w * x)], [np.sum(w * x), np.sum(w)]]) + 1e-9 * np.eye(2)
        step = np.linalg.solve(h, g)
        scale = 1.0
        while scale > 1e-8:
            a_new, b_new = a - scale * step[0], b - scale * step[1]
            new = loss(a_new, b_new)
            if new <= current:
                break
            scale /= 2
        if scale <= 1e-8 or current - new < 1e-12:
            break
        a, b, current = a_new, b_new, new
    return float(a), float(b)


def calibrate(raw: np.ndarray, a: float, b: float) -> np.ndarray:
    """Platt-scaled probabilities (the formula scoring applies in Spark, here in numpy)."""
    return 1 / (1 + np.exp(-(a * _logit(raw) + b)))


def choose_threshold(y: np.ndarray, p: np.ndarray, rule: Rule, prevalence: float | None = None) -> tuple[float, bool]:
    """(threshold on ``p``, whether the rule was met) for one finding with both classes present.

    ``prevalence`` is the ``pi`` of the ``prevalence`` rule (default: that of ``y``).
    """
    y = np.asarray(y).astype(bool)
    p = np.asarray(p, dtype=np.float64)
    if rule.kind == "youden":
        return youden_threshold(y, p), True
    fpr, tpr, thresholds = roc_curve(y, p)
    fpr, tpr, thresholds = fpr[1:], tpr[1:], thresholds[1:]  # without the +inf point; thresholds decrease
    if rule.kind == "prevalence":
        pi = float(y.mean()) if prevalence is None else prevalence
        called = pi * tpr + (1 - pi) * fpr  # the expected share of films called at each threshold
        return float(thresholds[int(np.argmin(np.abs(called - pi)))]), True  # ties: the highest threshold
    if rule.kind == "sensitivity":
        met = np.flatnonzero(tpr >= rule.value)
        return float(thresholds[met[0]]), True
    if rule.kind == "specificity":
        met = np.flatnonzero(1 - fpr >= rule.value)
        return float(thresholds[met[-1]]), True
    called = np.array([(p >= t).sum() for t in thresholds])
    precision = tpr * y.sum() / np.maximum(called, 1)
    met = np.flatnonzero(precision >= rule.value)
    if len(met):  # the best sensitivity that keeps the precision, at its highest threshold
        best = met[np.flatnonzero(tpr[met] == tpr[met].max())[0]]
        return float(thresholds[best]), True
    return float(thresholds[int(np.argmax(precision))]), False


def _interval(values: list[float]) -> list[float]:
    kept = [v for v in values if not math.isnan(v)]
    if not kept:
        return [float("nan"), float("nan")]
    return [float(np.quantile(kept, 0.025)), float(np.quantile(kept, 0.975))]


def bootstrap_rates(
    y: np.ndarray, p: np.ndarray, threshold: float, *, resamples: int = 200, seed: int = 0
) -> tuple[list[float], list[float]]:
    """95% percentile intervals of sensitivity and specificity at ``threshold`` (images resampled)."""
    rng = np.random.default_rng(seed)
    sens, spec = [], []
    for _ in range(resamples):
        rows = rng.integers(0, len(y), size=len(y))
        s, c = sensitivity_specificity(y[rows], p[rows], threshold)
        sens.append(s)
        spec.append(c)
    return _interval(sens), _interval(spec)


def operating_point(
    y: np.ndarray, raw: np.ndarray, rule: Rule, min_positives: int, seed: int = 0, prevalence: float | None = None
) -> dict[str, Any]:
    """Calibration, threshold and validation rates of one finding (see the module docstring)."""
    y = np.asarray(y).astype(bool)
    n_pos = int(y.sum())
    point: dict[str, Any] = {"rule": str(rule), "val_positives": n_pos, "val_images": len(y)}
    if n_pos == 0 or n_pos == len(y):  # one class: nothing to fit
        return point | {"status": NOT_CALIBRATED, "threshold": None, "calibration": None}
    a, b = fit_platt(y, raw)
    calibration = {"method": "platt", "a": a, "b": b}
    if n_pos < min_positives:  # Platt's two parameters hold with few positives; a threshold does not
        return point | {"status": NOT_CALIBRATED, "threshold": None, "calibration": calibration}
    p = calibrate(raw, a, b)
    threshold, met = choose_threshold(y, p, rule, prevalence)
    sens, spec = sensitivity_specificity(y, p, threshold)
    sens_ci, spec_ci = bootstrap_rates(y, p, threshold, seed=seed)
    return point | {
        "status": CALIBRATED,
        "threshold": threshold,
        "rule_met": met,
        "calibration": calibration,
        "val_sensitivity": sens,
        "val_sensitivity_ci": sens_ci,
        "val_specificity": spec,
        "val_specificity_ci": spec_ci,
        "val_called": float((p >= threshold).mean()),
        "val_prevalence": n_pos / len(y),
        **({"prevalence": prevalence} if rule.kind == "prevalence" and prevalence is not None else {}),
    }


def operating_points(
    y: np.ndarray,
    raw: np.ndarray,
    labels: Sequence[str],
    rule: str,
    per_finding: Mapping[str, str],
    min_positives: int,
    prevalence: Sequence[float] | None = None,
) -> dict[str, dict[str, Any]]:
    """:func:`operating_point` for every label (column ``i`` of ``y`` and ``raw`` is ``labels[i]``).

    ``prevalence[i]``: the prevalence of ``labels[i]`` that the ``prevalence`` rule calls
    (default: the validation split's).
    """
    return {
        name: operating_point(
            y[:, i],
            raw[:, i],
            parse_rule(per_finding.get(name, rule)),
            min_positives,
            seed=i,
            prevalence=None if prevalence is None else float(prevalence[i]),
        )
        for i, name in enumerate(labels)
    }
