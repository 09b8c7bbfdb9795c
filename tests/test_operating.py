"""Operating points and calibration: the rules, Platt scaling, and the "not calibrated" rule."""

from __future__ import annotations

import numpy as np
import pytest

from xray_spark.config import load_settings
from xray_spark.errors import ConfigError
from xray_spark.metrics import brier_score, calibration_bins, expected_calibration_error, sensitivity_specificity
from xray_spark.operating import (
    NOT_CALIBRATED,
    Rule,
    calibrate,
    choose_threshold,
    fit_platt,
    operating_point,
    parse_rule,
)


def _scores(n: int, prevalence: float, separation: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and raw scores of a model that ranks well but is badly calibrated (over-confident positives)."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < prevalence
    logit = rng.normal(0, 1, n) + separation * y
    raw = 1 / (1 + np.exp(-(2.5 * logit + 1.0)))  # too steep and shifted: raw 0.5 is far from a 50% chance
    return y, raw


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("youden", Rule("youden")),
        ("prevalence", Rule("prevalence")),
        ("sensitivity:0.9", Rule("sensitivity", 0.9)),
        ("specificity:0.95", Rule("specificity", 0.95)),
        ("precision:0.6", Rule("precision", 0.6)),
    ],
)
def test_rules_parse_and_print_back(text, rule):
    assert parse_rule(text) == rule and str(rule) == text


@pytest.mark.parametrize("text", ["f1", "sensitivity", "sensitivity:1.2", "precision:zero", "youden:0.5", ""])
def test_bad_rules_are_refused_with_the_forms_that_work(text):
    with pytest.raises(ValueError, match=r"threshold rule"):
        parse_rule(text)


def test_the_conf_checks_rules_findings_and_urgencies():
    with pytest.raises(ConfigError, match=r"thresholds\.per_finding\.Mass"):
        load_settings(None, ["thresholds.per_finding={Mass: 'sensitivity:2'}"])
    with pytest.raises(ConfigError, match="unknown findings"):
        load_settings(None, ["score.urgency={Flu: 0.5}"])
    with pytest.raises(ConfigError, match=r"weight in \[0, 1\]"):
        load_settings(None, ["score.urgency={Mass: 3}"])
    with pytest.raises(ConfigError, match=r"'worklist\.urgency' is now 'score\.urgency'"):
        load_settings(None, ["worklist.urgency={Mass: 0.5}"])
    settings = load_settings(None, ["thresholds.per_finding={Pneumothorax: 'sensitivity:0.9'}"])
    assert settings.thresholds.per_finding == {"Pneumothorax": "sensitivity:0.9"}
    assert settings.score.urgency["Pneumothorax"] == 1.0


def test_platt_scaling_makes_probabilities_honest_without_changing_the_order():
    y, raw = _scores(4000, 0.1, 2.5, seed=1)
    a, b = fit_platt(y, raw)
    y2, raw2 = _scores(4000, 0.1, 2.5, seed=2)  # fitted on one sample, judged on another
    p2 = calibrate(raw2, a, b)
    assert expected_calibration_error(y2, raw2) > 0.1  # the raw score is far off
    assert expected_calibration_error(y2, p2) < 0.03
    assert brier_score(y2, p2) < brier_score(y2, raw2)
    assert np.array_equal(np.argsort(p2, kind="stable"), np.argsort(raw2, kind="stable"))
    assert abs(p2.mean() - y2.mean()) < 0.02


def test_platt_targets_keep_a_perfectly_separated_finding_off_zero_and_one():
    y = np.array([0] * 40 + [1] * 5, dtype=bool)
    raw = np.concatenate([np.linspace(0.01, 0.3, 40), np.linspace(0.7, 0.99, 5)])
    p = calibrate(raw, *fit_platt(y, raw))
    assert p.min() > 0.0 and p.max() < 1.0
    assert p[y].min() > 0.5 > p[~y].max()


def test_each_rule_keeps_its_promise_on_the_validation_scores():
    y, raw = _scores(3000, 0.08, 2.0, seed=3)
    p = calibrate(raw, *fit_platt(y, raw))
    t, met = choose_threshold(y, p, Rule("sensitivity", 0.9))
    sens, _ = sensitivity_specificity(y, p, t)
    assert met and sens >= 0.9
    assert sensitivity_specificity(y, p, np.nextafter(t, 1))[0] < 0.9  # and is the highest such threshold
    t, met = choose_threshold(y, p, Rule("specificity", 0.95))
    _, spec = sensitivity_specificity(y, p, t)
    assert met and spec >= 0.95
    assert sensitivity_specificity(y, p, p[p < t].max())[1] < 0.95  # the next lower score breaks it
    t, met = choose_threshold(y, p, Rule("precision", 0.6))
    called = p >= t
    assert met and y[called].mean() >= 0.6
    sens = sensitivity_specificity(y, p, t)[0]
    lower = p[p < t].max()  # a lower threshold keeping the precision would find no more positives
    assert y[p >= lower].mean() < 0.6 or sensitivity_specificity(y, p, lower)[0] == sens
    # prevalence calls as many films as have the finding (as many false calls as misses);
    # Youden over-calls a rare finding
    t, met = choose_threshold(y, p, Rule("prevalence"))
    assert met and abs(int((p >= t).sum()) - int(y.sum())) <= 1
    assert abs(int((p >= t)[~y].sum()) - int((p < t)[y].sum())) <= 1
    t_youden, _ = choose_threshold(y, p, Rule("youden"))
    assert (p >= t_youden).mean() > 2 * y.mean()


def test_the_prevalence_rule_calls_the_given_prevalence_whatever_the_split_holds():
    """Sensitivity and specificity measured on a split with four times the prevalence, pi given:
    the threshold calls about pi of a split that has pi, not the validation split's own share."""
    y_val, raw_val = _scores(2000, 0.20, 2.0, seed=5)
    _, raw_test = _scores(20000, 0.05, 2.0, seed=6)
    t_given, _ = choose_threshold(y_val, raw_val, Rule("prevalence"), prevalence=0.05)
    t_own, _ = choose_threshold(y_val, raw_val, Rule("prevalence"))
    assert 0.75 < (raw_test >= t_given).mean() / 0.05 < 1.25
    assert (raw_test >= t_own).mean() / 0.05 > 1.5  # the validation split's own share over-calls


def test_an_unreachable_precision_falls_back_to_the_best_one_and_says_so():
    y, raw = _scores(500, 0.05, 0.3, seed=4)  # a weak model: no threshold reaches precision 0.95
    t, met = choose_threshold(y, raw, Rule("precision", 0.95))
    assert not met and y[raw >= t].mean() < 0.95


def test_too_few_validation_positives_means_not_calibrated_and_never_called():
    y = np.zeros(100, dtype=bool)
    y[:3] = True
    point = operating_point(y, np.linspace(0, 1, 100), Rule("youden"), min_positives=5)
    assert point["status"] == NOT_CALIBRATED and point["threshold"] is None
    assert point["calibration"]["method"] == "platt"  # the probability is still scaled
    assert operating_point(np.zeros(50, dtype=bool), np.linspace(0, 1, 50), Rule("youden"), 5)["calibration"] is None
    y[:8] = True
    point = operating_point(y, np.r_[np.linspace(0.6, 0.9, 8), np.linspace(0.0, 0.5, 92)], Rule("youden"), 5)
    assert point["status"] == "calibrated" and point["val_positives"] == 8
    low, high = point["val_sensitivity_ci"]
    assert low <= point["val_sensitivity"] <= high


def test_calibration_bins_and_ece_by_hand():
    y = np.array([0, 0, 1, 1, 1, 0])
    p = np.array([0.05, 0.15, 0.95, 0.85, 0.55, 0.45])
    bins = calibration_bins(y, p)
    assert [n for _, _, n in bins] == [1, 1, 1, 1, 1, 1]
    # |0-0.05| + |0-0.15| + |0-0.45| + |1-0.55| + |1-0.85| + |1-0.95| over 6
    assert expected_calibration_error(y, p) == pytest.approx((0.05 + 0.15 + 0.45 + 0.45 + 0.15 + 0.05) / 6)
    assert brier_score(y, p) == pytest.approx(np.mean((p - y) ** 2))
