"""The evaluate job: AUROC and intervals agree with scikit-learn, the report is written."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from pyspark.sql import functions as F
from sklearn.metrics import roc_auc_score

from xray_spark.score import pipeline as scoring

from .lakes import own_scoring_lake


@pytest.fixture(scope="module")
def scored_lake(spark, prepared, small_model, tmp_path_factory):
    return own_scoring_lake(prepared, small_model, tmp_path_factory.mktemp("scorelake"))


def test_evaluation_agrees_with_sklearn_and_writes_its_report(spark, scored_lake, small_model):
    settings, lake = scored_lake
    scoring.run_scoring(spark, lake, settings, model_path=small_model["model_dir"], new_only=True)
    from xray_spark.evaluate.pipeline import collect_scored_labels, run_evaluation

    quick = dataclasses.replace(settings, evaluate=dataclasses.replace(settings.evaluate, split="test", bootstrap=200))
    summary = run_evaluation(spark, lake, quick, model_path=small_model["model_dir"])
    data = collect_scored_labels(spark, lake, small_model["version"], "test", small_model["labels"])
    assert summary["images"] == len(data["y"]) > 0
    test_patients = {r["patient_id"] for r in spark.table("xray.studies").where("split = 'test'").collect()}
    assert set(data["patients"].tolist()) <= test_patients
    for i, m in enumerate(summary["metrics"]):
        y, p = data["y"][:, i], data["p"][:, i]
        if 0 < y.sum() < len(y):
            assert m["auroc"] == pytest.approx(roc_auc_score(y, p), abs=1e-9)
            assert m["auroc_low"] <= m["auroc"] <= m["auroc_high"]
        assert m["true_prevalence"] == pytest.approx(y.mean())
        if m["threshold"] is None:
            assert m["status"] == "not calibrated" and math.isnan(m["predicted_prevalence"])
        else:
            assert m["predicted_prevalence"] == pytest.approx((p >= m["threshold"]).mean())
        assert m["brier"] == pytest.approx(np.mean((p - y) ** 2), abs=1e-6)
    assert Path(summary["report"]).read_text().count("<tr>") == len(summary["metrics"]) + 1
    assert Path(summary["roc_png"]).read_bytes().startswith(b"\x89PNG")
    assert Path(summary["reliability_png"]).read_bytes().startswith(b"\x89PNG")
    rows = spark.read.parquet(lake.table_url("evaluations")).where(F.col("model_version") == small_model["version"])
    assert rows.count() == len(summary["metrics"])
