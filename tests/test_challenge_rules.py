"""The challenge's power calculation and outcome: a too-small test says INCONCLUSIVE, never a verdict on the model."""

from __future__ import annotations

import dataclasses
from statistics import NormalDist

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from xray_spark.challenge.power import auroc_variance, difference_se, power_of, target_se
from xray_spark.challenge.rules import FAIL, INCONCLUSIVE, PASS, apply, kept_findings, outcome, power_rule
from xray_spark.config import PromotionSettings


def _simulated_spread(positives: int, negatives: int, draw) -> tuple[float, float]:
    """(mean, standard deviation) of the AUROC over 1,000 simulated test sets."""
    rng = np.random.default_rng(positives)
    y = np.r_[np.ones(positives), np.zeros(negatives)]
    aurocs = [roc_auc_score(y, np.r_[draw(rng, positives, True), draw(rng, negatives, False)]) for _ in range(1000)]
    return float(np.mean(aurocs)), float(np.std(aurocs))


@pytest.mark.parametrize(("positives", "negatives", "auroc"), [(40, 300, 0.85), (15, 150, 0.92), (200, 200, 0.7)])
def test_hanley_mcneils_variance_is_the_spread_of_simulated_aurocs(positives, negatives, auroc):
    """Exact for the scores the formula assumes (exponential), conservative for binormal ones (it foresees more
    films than are needed, never fewer)."""
    rate = 1 / auroc - 1  # P(Exp(rate) > Exp(1)) = 1 / (1 + rate)

    def exponential(rng, n, positive):
        return rng.exponential(1 / rate if positive else 1.0, n)

    a, seen = _simulated_spread(positives, negatives, exponential)
    assert np.sqrt(auroc_variance(a, positives, negatives)) == pytest.approx(seen, rel=0.08)
    shift = float(NormalDist().inv_cdf(auroc) * np.sqrt(2))

    def binormal(rng, n, positive):
        return rng.normal(shift if positive else 0.0, 1.0, n)

    a, seen = _simulated_spread(positives, negatives, binormal)
    assert seen * 0.97 <= np.sqrt(auroc_variance(a, positives, negatives)) <= seen * 1.5


def test_the_target_and_the_films_needed():
    # a 0.02 margin at 95% two-sided, power 0.8: z = 1.960 + 0.842
    assert target_se(0.02, 0.95, 0.8) == pytest.approx(0.02 / 2.8016, rel=1e-3)
    small = power_of("Mass", 0.85, 20, 280, margin=0.02, level=0.95, power=0.8, correlation=0.5)
    assert not small.enough and small.films_needed > 300 and small.positives_needed > 20
    # the films it says are needed do reach the target, and a few fewer do not
    k = small.films_needed / 300
    assert difference_se(0.85, 20 * k, 280 * k, 0.5) <= small.target * 1.001
    assert difference_se(0.85, 20 * k * 0.97, 280 * k * 0.97, 0.5) > small.target
    large = power_of("Mass", 0.85, 4000, 40000, margin=0.02, level=0.95, power=0.8, correlation=0.5)
    assert large.enough and large.films_needed == large.films


def _row(finding: str, low: float, high: float, *, auroc: float = 0.85) -> dict:
    return {
        "finding": finding, "judged": True, "positives": 30, "films": 300, "auroc_champion": auroc,
        "auroc_challenger": auroc + (low + high) / 2, "difference": (low + high) / 2, "delong_low": low,
        "delong_high": high, "sensitivity_champion": 0.8, "sensitivity_challenger": 0.8,
    }  # fmt: skip


def _judge(rows, rule, *, dropped=()):
    powers = [
        power_of(
            r["finding"],
            r["auroc_champion"],
            r["positives"],
            r["films"] - r["positives"],
            margin=rule.non_inferiority_margin,
            level=rule.level,
            power=rule.power,
            correlation=rule.assumed_correlation,
        )
        for r in rows
    ]
    rules = [*apply(rows, rule), kept_findings(list(dropped), rule.may_drop), power_rule(powers, rule)]
    return outcome(rows, rules, rule), rules


def test_an_equal_challenger_on_too_few_films_is_inconclusive_with_the_films_needed():
    rule = PromotionSettings()
    verdict, rules = _judge([_row("Mass", -0.10, 0.10), _row("Nodule", -0.08, 0.09)], rule)
    assert verdict == INCONCLUSIVE
    power = next(r for r in rules if r["rule"] == "power")
    assert not power["passed"] and "too few films" in power["detail"] and "positives in" in power["detail"]
    # shown inferior (the whole interval below -margin) is a verdict whatever the power
    assert _judge([_row("Mass", -0.30, -0.12), _row("Nodule", -0.08, 0.09)], rule)[0] == FAIL
    # shown non-inferior on the same few films: a verdict too
    assert _judge([_row("Mass", -0.01, 0.12), _row("Nodule", -0.015, 0.09)], rule)[0] == PASS
    # the same wide intervals on films enough for the margin do not happen: with enough films, not passing is FAIL
    big = [dict(_row("Mass", -0.03, 0.01), positives=4000, films=40000)]
    assert _judge(big, rule)[0] == FAIL


def test_a_challenger_that_drops_findings_the_champion_calls_fails_unless_the_rule_allows_it():
    rule = PromotionSettings()
    good = [_row("Mass", -0.01, 0.12)]
    verdict, rules = _judge(good, rule, dropped=["Hernia", "Pneumonia"])
    assert verdict == FAIL
    kept = next(r for r in rules if r["rule"] == "findings kept")
    assert not kept["passed"] and "Hernia, Pneumonia" in kept["detail"]
    allowed = dataclasses.replace(rule, may_drop=["Hernia", "Pneumonia"])
    assert _judge(good, allowed, dropped=["Hernia", "Pneumonia"])[0] == PASS
    # dropping findings is a verdict even on too few films
    assert _judge([_row("Mass", -0.10, 0.10)], rule, dropped=["Hernia"])[0] == FAIL
