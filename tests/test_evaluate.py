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


def test_two_datasets_whose_patient_numbers_collide_are_evaluated_and_counted_apart(
    spark, prepared, small_model, archive, tmp_path
):
    """Dataset site2 holds the same films under the same patient numbers as nih (as a hospital's integer ids would
    collide with NIH's): each is evaluated on its own films, with its own report and rows; a patient is a dataset
    and a number everywhere, and the worklist's patient pages keep them apart."""
    from xray_spark.evaluate.pipeline import run_evaluation
    from xray_spark.pages.lake_view import LakeView
    from xray_spark.prepare import PrepareInputs, run_prepare
    from xray_spark.scored import collect_scored_labels

    from .conftest import make_settings
    from .lakes import copy_lake

    settings, lake = copy_lake(prepared, tmp_path / "lake")
    site2 = make_settings(Path(lake.root), "dataset=site2")
    half = tmp_path / "site2.csv"  # half of nih's films, the same patients under the same numbers
    half.write_text("\n".join((archive / "Data_Entry_2017.csv").read_text().splitlines()[:81]) + "\n")
    run_prepare(spark, lake, site2, PrepareInputs(str(half), str(archive / "images")))
    for mine in (settings, site2):
        scoring.run_scoring(spark, lake, mine, model_path=small_model["model_dir"], new_only=True)
    quick = dataclasses.replace(settings, evaluate=dataclasses.replace(settings.evaluate, bootstrap=50))
    version, labels = small_model["version"], small_model["labels"]
    both = collect_scored_labels(spark, lake, version, "test", labels)  # every dataset's test films
    nih, other_films = (
        collect_scored_labels(spark, lake, version, "test", labels, dataset=d) for d in ("nih", "site2")
    )
    assert len(other_films["y"]) > 0 and len(both["y"]) == len(nih["y"]) + len(other_films["y"])
    numbers = {d: set(data["patients"].tolist()) for d, data in (("nih", nih), ("site2", other_films))}
    assert numbers["site2"] <= numbers["nih"] and set(both["patients"].tolist()) == numbers["nih"], "numbers collide"
    assert len(set(both["groups"].tolist())) == len(numbers["nih"]) + len(numbers["site2"]), "patients do not"
    default = run_evaluation(spark, lake, quick, model_path=small_model["model_dir"])
    other = run_evaluation(spark, lake, quick, model_path=small_model["model_dir"], dataset="site2")
    assert (default["dataset"], other["dataset"]) == ("nih", "site2"), "by default the dataset it trained on"
    assert (default["images"], other["images"]) == (len(nih["y"]), len(other_films["y"]))
    assert (default["patients"], other["patients"]) == (len(numbers["nih"]), len(numbers["site2"]))
    assert default["report"] != other["report"] and Path(default["report"]).is_file()
    assert "dataset <b>nih</b>" in Path(default["report"]).read_text()
    rows = spark.read.parquet(lake.table_url("evaluations")).where(F.col("model_version") == version).collect()
    assert {r["dataset"] for r in rows} == {"nih", "site2"}
    assert sum(r["dataset"] == "nih" for r in rows) == sum(r["dataset"] == "site2" for r in rows) == len(labels)
    view = LakeView(lake)
    patient = int(other_films["patients"][0])
    films = {d: {f["image_id"] for f in view.patient(d, patient)} for d in ("nih", "site2")}
    assert films["site2"] and films["site2"] <= films["nih"], "the same file names, each dataset's own patient page"
    from xray_spark.lake import tables

    tables.register_tables(spark, lake)
    progression = spark.table("xray.progression").where(F.col("patient_id") == patient)
    by_dataset = {d: progression.where(F.col("dataset") == d).count() for d in ("nih", "site2")}
    assert by_dataset["nih"] >= by_dataset["site2"] > 0, "each dataset's patient has a progression of their own"
