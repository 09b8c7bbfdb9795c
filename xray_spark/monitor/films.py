"""What monitoring measures per film, without ground truth: the DICOM metadata it carries, simple
statistics of its stored picture, and the champion's calibrated probabilities and calls on it.

A *night* is one scoring run of the champion on the dataset (``run_id`` of ``xray.predictions``;
the nightly flow makes one per night). The per-film frame is small (a few numbers and strings
per film) and is collected to the driver, where the tests run; the pictures are decoded on the
executors.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from xray_spark.labels import probability_column
from xray_spark.lake import Lake, tables

#: Categories a DICOM film carries (columns of ``xray.dicom_instances`` and ``xray.studies``).
CATEGORIES = ("manufacturer", "model_name", "photometric", "bits_stored", "transfer_syntax", "view")
#: Numbers per film: the pixel spacing (mm) and the stored picture's statistics (0..1).
NUMBERS = ("pixel_spacing", "image_mean", "image_spread", "image_saturated")
#: A stored pixel at or beyond these 8-bit values counts as saturated.
SATURATED_LOW, SATURATED_HIGH = 2, 253

STATS_SCHEMA = T.StructType(
    [T.StructField("image_id", T.StringType(), False)]
    + [T.StructField(n, T.DoubleType(), True) for n in ("image_mean", "image_spread", "image_saturated")]
)


def picture_stats(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """Mean, standard deviation and saturated share of each stored picture (PNG in the store)."""
    import cv2

    for batch in batches:
        out = []
        for image_id, png in zip(batch["image_id"], batch["image"], strict=True):
            pixels = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_GRAYSCALE)
            if pixels is None:
                out.append((image_id, np.nan, np.nan, np.nan))
                continue
            saturated = float(((pixels <= SATURATED_LOW) | (pixels >= SATURATED_HIGH)).mean())
            out.append((image_id, float(pixels.mean()) / 255, float(pixels.std()) / 255, saturated))
        yield pd.DataFrame(out, columns=["image_id", "image_mean", "image_spread", "image_saturated"])


def _instances(spark: SparkSession, lake: Lake, dataset: str) -> DataFrame | None:
    if not tables.exists_in_lake(spark, lake, "dicom_instances"):
        return None
    rows = spark.read.option("mergeSchema", "true").parquet(lake.table_url("dicom_instances"))
    rows = rows.where(F.col("dataset") == dataset)
    for name in ("manufacturer", "model_name"):  # a lake whose instances predate these columns
        if name not in rows.columns:
            rows = rows.withColumn(name, F.lit(None).cast("string"))
    return rows.select("image_id", *[F.col(c).cast("string").alias(c) for c in CATEGORIES if c != "view"])


def film_frame(
    spark: SparkSession, lake: Lake, predictions: DataFrame, dataset: str, findings: Sequence[str]
) -> pd.DataFrame:
    """One row per scored film of ``predictions`` (one dataset): patient_id, run_id, score_date, the categories,
    the numbers, ``p:<finding>`` (calibrated probability) and ``call:<finding>`` (called or not)."""
    scored = predictions.select(
        "image_id",
        "patient_id",
        "run_id",
        "score_date",
        *[F.col(probability_column(f)).cast("double").alias(f"p:{f}") for f in findings],
        *[F.array_contains("called", f).alias(f"call:{f}") for f in findings],
    )
    studies = tables.read_table(spark, lake, "studies").where(F.col("dataset") == dataset)
    films = scored.join(
        studies.select("image_id", "view", F.col("pixel_spacing_x").cast("double").alias("pixel_spacing")),
        "image_id",
        "left",
    )
    instances = _instances(spark, lake, dataset)
    if instances is not None:
        films = films.join(instances, "image_id", "left")
    ids = scored.select("image_id").distinct()
    store = spark.read.parquet(lake.store_url(dataset)).select("image_id", "image").join(ids, "image_id", "left_semi")
    films = films.join(store.mapInPandas(picture_stats, STATS_SCHEMA), "image_id", "left")
    frame = films.toPandas()
    for name in CATEGORIES:
        if name not in frame.columns:
            frame[name] = None
    return frame
