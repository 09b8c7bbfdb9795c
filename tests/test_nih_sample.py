"""The real NIH metadata (all 112,120 rows), bounding boxes and 150 real images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from petastorm import make_reader

from xray_spark.imaging.decode import load_training_image
from xray_spark.lake import Lake
from xray_spark.lake.schema import decode_labels
from xray_spark.prepare import PrepareInputs, run_prepare

from .conftest import make_settings

#: Per-finding image counts over all 112,120 rows, as published with the release.
NIH_COUNTS = {
    "Infiltration": 19894,
    "Effusion": 13317,
    "Atelectasis": 11559,
    "Nodule": 6331,
    "Mass": 5782,
    "Pneumothorax": 5302,
    "Consolidation": 4667,
    "Pleural_Thickening": 3385,
    "Cardiomegaly": 2776,
    "Emphysema": 2516,
    "Edema": 2303,
    "Fibrosis": 1686,
    "Pneumonia": 1431,
    "Hernia": 227,
    "No Finding": 60361,
}
THESIS_SIX = ["Atelectasis", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumothorax"]
RGBA_IMAGES = {"00000100_000.png", "00001369_000.png"}


@pytest.fixture(scope="module")
def nih_run(spark, nih_sample, tmp_path_factory):
    settings = make_settings(tmp_path_factory.mktemp("nihlake"), "labels.min_cases=5000")
    lake = Lake.at(settings.lake)
    inputs = PrepareInputs(
        metadata=str(nih_sample / "Data_Entry_2017_v2020.csv.gz"),
        images=str(nih_sample / "images"),
        bbox=str(nih_sample / "BBox_List_2017.csv.gz"),
    )
    return settings, lake, run_prepare(spark, lake, settings, inputs)


def test_metadata_counts_of_the_whole_release(nih_run):
    _, _, summary = nih_run
    meta = summary["metadata"]
    assert meta["rows"] == 112_120 and meta["valid_rows"] == 112_120
    assert meta["patients"] == 30_805
    assert meta["views"] == {"PA": 67_310, "AP": 44_810}
    assert meta["finding_counts"] == NIH_COUNTS


def test_min_cases_5000_keeps_the_thesis_six(nih_run):
    _, _, summary = nih_run
    assert summary["label_set"] == THESIS_SIX
    assert {f: summary["metadata"]["finding_counts"][f] for f in THESIS_SIX} == {
        "Atelectasis": 11559,
        "Effusion": 13317,
        "Infiltration": 19894,
        "Mass": 5782,
        "Nodule": 6331,
        "Pneumothorax": 5302,
    }


def test_the_150_images_are_ingested_and_rgba_converted(nih_run, nih_sample):
    settings, lake, summary = nih_run
    assert summary["images"]["written"] == 150
    assert summary["quarantine"]["total"] == 0
    assert summary["images"]["converted"] == {"rgba": 2}
    assert summary["images"]["metadata_rows_without_file"] == 112_120 - 150
    assert summary["images"]["files_without_metadata"] == 0
    with make_reader(lake.store_url(settings.dataset), reader_pool_type="dummy") as reader:
        rows = {row.image_id: row for row in reader}
    assert set(rows) == set((nih_sample / "images.txt").read_text().split())
    for name in RGBA_IMAGES:
        expected, facts = load_training_image((nih_sample / "images" / name).read_bytes(), 64)
        assert facts["converted"] == "rgba"
        np.testing.assert_array_equal(rows[name].image, expected)
        assert decode_labels(rows[name].labels).shape == (6,)


def test_real_boxes(spark, nih_run):
    settings, _, summary = nih_run
    assert summary["boxes"]["rows"] == 984 and summary["boxes"]["images"] == 880
    boxed = spark.sql(
        f"SELECT COUNT(DISTINCT b.image_id) AS n FROM xray.boxes b JOIN xray.studies s "
        f"ON b.image_id = s.image_id WHERE s.dataset = '{settings.dataset}'"
    ).first()["n"]
    assert boxed == 4
    findings = {r["finding"] for r in spark.table("xray.boxes").select("finding").distinct().collect()}
    assert "Infiltration" in findings and "Infiltrate" not in findings


def test_the_150_real_images_are_scored_once_each(spark, nih_run):
    """A model trained briefly on the real sample's store, then every real image scored exactly once."""
    from pyspark.sql import functions as F

    from xray_spark.score.pipeline import run_scoring
    from xray_spark.train.pipeline import run_training

    settings, lake, _ = nih_run
    quick = make_settings(Path(lake.root), "labels.min_cases=5000", "train.epochs=1", "train.eval_max_rows=20")
    trained = run_training(spark, lake, quick)
    assert trained["labels"] == THESIS_SIX
    summary = run_scoring(spark, lake, settings, model_version=trained["version"], new_only=True)
    assert summary["written"] == 150
    rows = spark.table("xray.predictions").where(F.col("model_version") == trained["version"])
    assert rows.count() == 150 and rows.select("image_id").distinct().count() == 150
    assert set(rows.columns) >= {f"p_{f.lower()}" for f in THESIS_SIX}
