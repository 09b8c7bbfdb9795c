"""DeLong's paired test against the values R's pROC publishes for the aSAH data (its tests/testthat)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from xray_spark.challenge.paired import bootstrap_difference_ci, delong, delong_test, midranks

DATA = Path(__file__).parent / "data" / "asah.csv"


def _asah() -> dict[str, np.ndarray]:
    with open(DATA, newline="") as fh:
        rows = list(csv.DictReader(line for line in fh if not line.startswith("#")))
    assert len(rows) == 113
    out = {"poor": np.array([r["outcome"] == "Poor" for r in rows])}
    out |= {k: np.array([float(r[k]) for r in rows]) for k in ("wfns", "s100b", "ndka")}
    return out


def test_midranks_share_tied_ranks():
    assert midranks(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]


def test_aurocs_variances_and_covariances_are_procs_published_values():
    d = _asah()
    aucs, cov = delong(d["poor"], np.vstack([d["wfns"], d["ndka"], d["s100b"]]))
    for i, k in enumerate(("wfns", "ndka", "s100b")):
        assert aucs[i] == pytest.approx(roc_auc_score(d["poor"], d[k]), abs=1e-12)
    # pROC tests/testthat/test-var.R and test-cov.R
    assert np.diag(cov) == pytest.approx([0.00146991470882363, 0.0031908105493913, 0.00266868245717244], rel=1e-9)
    assert cov[0, 1] == pytest.approx(-0.000532967856762438, rel=1e-9)
    assert cov[1, 2] == pytest.approx(-0.000756164938056579, rel=1e-9)
    assert cov[2, 0] == pytest.approx(0.00119615567376754, rel=1e-9)


@pytest.mark.parametrize(
    ("a", "b", "z", "p", "low", "high"),
    [  # pROC tests/testthat/test-roc.test.R: roc.test(r.wfns, r.s100b), (r.wfns, r.ndka), (r.ndka, r.s100b)
        ("wfns", "s100b", 2.20898359144091, 0.0271757822291882, 0.0104061769564846, 0.174214419249478),
        ("wfns", "ndka", 2.79777591868904, 0.00514557970691098, 0.0634011709339876, 0.3600405634833566),
        ("ndka", "s100b", -1.39077002573558, 0.164295175223054, -0.2876917446341914, 0.0488706064228094),
    ],
)
def test_the_paired_test_reproduces_roc_test(a, b, z, p, low, high):
    d = _asah()
    result = delong_test(d["poor"], d[a], d[b])
    assert (result.z, result.p_value, result.low, result.high) == pytest.approx((z, p, low, high), rel=1e-8)
    same = delong_test(d["poor"], d[a], d[a])
    assert (same.z, same.p_value, same.difference) == (0.0, 1.0, 0.0)


def test_the_patient_bootstrap_of_the_difference_covers_delongs_interval_centre():
    d = _asah()
    low, high = bootstrap_difference_ci(d["poor"], d["wfns"], d["s100b"], np.arange(113), resamples=400)
    test = delong_test(d["poor"], d["wfns"], d["s100b"])
    assert low < test.difference < high
    assert abs((high - low) - (test.high - test.low)) < 0.08, "about as wide as DeLong's on independent cases"
