"""Drift tests without ground truth: did a night's films, or the model's outputs on them, move from a reference?

Each measure compares a night with the reference window (the champion's validation films, or
the first nights after promotion) and gives a p-value:

* a number per film (pixel spacing, bits stored, mean brightness, spread, saturated share, a
  finding's calibrated probability): the two-sample Kolmogorov-Smirnov test;
* a category per film (manufacturer, model, photometric interpretation, view, transfer
  syntax): Pearson's chi-square test of the two samples' counts, or Fisher's exact test
  when the table is 2 x 2 with an expected count under 5;
* a finding's call rate: the exact binomial test of the night's calls against the rate the
  reference expects, or Fisher's exact test against the validation split's calls where that
  rate was measured on a validation split of known size.

A night tests many measures, so its alerts are chosen by Holm's step-down procedure at a
family-wise level ``alpha`` per night: the chance that a night drawn from the reference
raises any alert is at most ``alpha``, whatever the measures' dependence. SciPy (BSD-3)
computes the tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Measured:
    """One measure on one night: its statistic, p-value and a summary of what moved (for people)."""

    measure: str
    kind: str  # numbers | categories | rate
    statistic: float
    p_value: float
    reference: str
    night: str


def numbers(measure: str, reference: Sequence[float], night: Sequence[float]) -> Measured:
    """Kolmogorov-Smirnov on two samples of a number (NaNs left out)."""
    from scipy.stats import ks_2samp

    a, b = (np.asarray(x, np.float64) for x in (reference, night))
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if len(a) == 0 or len(b) == 0:
        return Measured(measure, "numbers", float("nan"), 1.0, _median(a), _median(b))
    result = ks_2samp(a, b)
    return Measured(measure, "numbers", float(result.statistic), float(result.pvalue), _median(a), _median(b))


def categories(measure: str, reference: Sequence[str], night: Sequence[str]) -> Measured:
    """Chi-square (or Fisher's exact test on a sparse 2 x 2) on the counts of each category in the two samples."""
    from scipy.stats import chi2_contingency, fisher_exact

    names = sorted({*map(str, reference), *map(str, night)})
    table = np.array([[sum(str(x) == n for x in sample) for n in names] for sample in (reference, night)])
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return Measured(measure, "categories", 0.0, 1.0, _shares(names, table[0]), _shares(names, table[-1]))
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    if table.shape == (2, 2) and expected.min() < 5:
        statistic, p = fisher_exact(table)
    else:
        statistic, p, _, _ = chi2_contingency(table, correction=False)
    return Measured(
        measure, "categories", float(statistic), float(p), _shares(names, table[0]), _shares(names, table[1])
    )


def rate(measure: str, expected: float, calls: int, films: int, reference_films: int = 0) -> Measured:
    """The exact binomial test of ``calls`` in ``films`` against the ``expected`` rate; where the rate was itself
    measured on ``reference_films`` films (a validation split), Fisher's exact test of the two samples instead,
    so that a rate known from a few films does not raise alerts by its own noise. The night's value carries
    its 95% binomial (Clopper-Pearson) interval."""
    from scipy.stats import binomtest, fisher_exact

    if films == 0:
        return Measured(measure, "rate", float("nan"), 1.0, f"{expected:.3f}", "no films")
    interval = binomtest(calls, films, min(max(expected, 1e-9), 1 - 1e-9)).proportion_ci(0.95)
    night = f"{calls / films:.3f} ({interval.low:.3f}-{interval.high:.3f})"
    if reference_films:
        called = round(expected * reference_films)
        _, p = fisher_exact([[called, reference_films - called], [calls, films - calls]])
        return Measured(measure, "rate", calls / films, float(p), f"{expected:.3f} of {reference_films}", night)
    p = binomtest(calls, films, min(max(expected, 1e-9), 1 - 1e-9)).pvalue
    return Measured(measure, "rate", calls / films, float(p), f"{expected:.3f}", night)


def holm(p_values: Mapping[str, float], alpha: float) -> set[str]:
    """The measures Holm's step-down procedure rejects at family-wise level ``alpha``."""
    ordered = sorted(p_values.items(), key=lambda kv: kv[1])
    m, rejected = len(ordered), set()
    for i, (name, p) in enumerate(ordered):
        if p > alpha / (m - i):
            break
        rejected.add(name)
    return rejected


def _median(values: np.ndarray) -> str:
    return "no films" if len(values) == 0 else f"median {float(np.median(values)):.4g}"


def _shares(names: Sequence[str], counts: np.ndarray) -> str:
    total = max(int(np.sum(counts)), 1)
    return ", ".join(f"{n} {c / total:.0%}" for n, c in zip(names, counts, strict=True) if c)
