"""A model's predictions joined with the films' labels: what evaluation and a challenge measure."""

from __future__ import annotations

import numpy as np
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from xray_spark.errors import UsageError
from xray_spark.labels import probability_column
from xray_spark.lake import Lake, tables


def patient_of(dataset: str, patient_id: int) -> str:
    """A patient of the lake: their dataset and their number in it (patient 7 of nih is not patient 7 of a
    hospital)."""
    return f"{dataset}/{patient_id}"


def collect_scored_labels(
    spark: SparkSession, lake: Lake, version: str, split: str, labels: list[str], *, dataset: str | None = None
) -> dict[str, np.ndarray]:
    """For one model version: y (N x L), p (N x L), patient ids, image ids, on one split (of one dataset), and the
    patients as ``groups``: (dataset, patient id) as one key, since two datasets number their patients apart."""
    predictions = tables.read_table(spark, lake, "predictions")
    studies = tables.read_table(spark, lake, "studies")
    if predictions is None or studies is None:
        raise UsageError("xray.predictions or xray.studies is missing: run jobs/prepare.py and jobs/score.py first")
    mine = predictions.where(F.col("model_version") == version)
    if dataset is not None:
        mine = mine.where(F.col("dataset") == dataset)
    latest = mine.groupBy("dataset", "image_id").agg(F.max("scored_at").alias("scored_at"))
    mine = mine.join(latest, ["dataset", "image_id", "scored_at"])
    cols = [probability_column(x) for x in labels]
    joined = (
        mine.select("dataset", "image_id", *cols)
        .join(studies.select("dataset", "image_id", "patient_id", "split", "findings"), ["dataset", "image_id"])
        .where(F.col("split") == split)
        .orderBy("dataset", "image_id")
    )
    rows = joined.collect()
    y = np.array([[1.0 if x in (r["findings"] or []) else 0.0 for x in labels] for r in rows], dtype=np.float32)
    p = np.array([[r[c] for c in cols] for r in rows], dtype=np.float32)
    return {
        "y": y.reshape(-1, len(labels)),
        "p": p.reshape(-1, len(labels)),
        "patients": np.array([r["patient_id"] for r in rows]),
        "groups": np.array([patient_of(r["dataset"], r["patient_id"]) for r in rows], dtype=object),
        "ids": np.array([r["image_id"] for r in rows], dtype=object),
    }
