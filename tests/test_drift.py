"""The drift tests: quiet on nights drawn from the reference, loud on a shifted one, Holm over a night's measures."""

from __future__ import annotations

import numpy as np

from xray_spark.monitor.drift import categories, holm, numbers, rate


def _night(rng, shift: float = 0.0, manufacturer: str = "ACME", monochrome1: float = 0.0, n: int = 200):
    return {
        "mean": rng.normal(0.45 + shift, 0.05, n),
        "manufacturer": rng.choice(["ACME", "Other"], n, p=[0.8, 0.2]).tolist()
        if manufacturer == "ACME"
        else [manufacturer] * n,
        "photometric": np.where(rng.random(n) < monochrome1, "MONOCHROME1", "MONOCHROME2").tolist(),
        "calls": int(rng.binomial(n, 0.1)),
        "n": n,
    }


def _alerts(reference, night) -> set[str]:
    measured = [
        numbers("mean", reference["mean"], night["mean"]),
        categories("manufacturer", reference["manufacturer"], night["manufacturer"]),
        categories("photometric", reference["photometric"], night["photometric"]),
        rate("calls", reference["calls"] / reference["n"], night["calls"], night["n"]),
    ]
    return holm({m.measure: m.p_value for m in measured}, alpha=0.01)


def test_nights_from_the_reference_raise_at_most_one_alert_in_thirty():
    rng = np.random.default_rng(1)
    reference = _night(rng, n=2000)
    alerts = [_alerts(reference, _night(rng)) for _ in range(30)]
    assert sum(bool(a) for a in alerts) <= 1, alerts


def test_each_shift_raises_its_own_measure():
    rng = np.random.default_rng(2)
    reference = _night(rng, n=2000)
    assert _alerts(reference, _night(rng, shift=0.05)) == {"mean"}
    assert _alerts(reference, _night(rng, manufacturer="NewVendor")) == {"manufacturer"}
    assert _alerts(reference, _night(rng, monochrome1=0.5)) == {"photometric"}
    shifted = _night(rng) | {"calls": 60}  # 30% called where 10% is expected
    assert _alerts(reference, shifted) == {"calls"}


def test_holm_steps_down_and_a_sparse_table_gets_fishers_test():
    assert holm({"a": 0.001, "b": 0.006, "c": 0.03}, alpha=0.01) == {"a"}  # 0.006 > 0.01 / 2: the steps stop
    assert holm({"a": 0.001, "b": 0.004}, alpha=0.01) == {"a", "b"}
    sparse = categories("view", ["PA"] * 40 + ["AP"] * 2, ["PA"] * 10 + ["AP"] * 3)
    assert sparse.kind == "categories" and 0 < sparse.p_value < 0.1
    assert categories("view", ["PA"] * 10, ["PA"] * 5).p_value == 1.0


def test_a_rate_measured_on_few_films_is_compared_as_a_sample_not_as_a_known_rate():
    from scipy.stats import fisher_exact

    # 12 of 100 validation films called, 22 of 100 tonight: taken as known, 0.12 looks far off; as a sample, less so
    known, sampled = rate("calls", 0.12, 22, 100), rate("calls", 0.12, 22, 100, reference_films=100)
    assert known.p_value < 0.01 < sampled.p_value
    assert sampled.p_value == fisher_exact([[12, 88], [22, 78]])[1]
    assert sampled.reference == "0.120 of 100" and sampled.night.startswith("0.220 (")
    # and a real jump is still caught as a sample: 40 of 100 against 12 of 100
    assert rate("calls", 0.12, 40, 100, reference_films=100).p_value < 1e-4
