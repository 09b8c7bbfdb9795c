"""``xray.monitoring``: one row per night and measure; a rerun of a night replaces that night's rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import types as T

from xray_spark import tables
from xray_spark.lake import Lake

SCHEMA = T.StructType(
    [
        T.StructField("score_date", T.StringType(), False),
        T.StructField("model_version", T.StringType(), False),
        T.StructField("measure", T.StringType(), False),
        T.StructField("kind", T.StringType(), False),  # input | output | night
        T.StructField("test", T.StringType(), False),  # ks | chi-square or fisher | fisher or binomial | none
        T.StructField("statistic", T.DoubleType(), True),
        T.StructField("p_value", T.DoubleType(), True),
        T.StructField("alert", T.BooleanType(), False),
        T.StructField("films", T.IntegerType(), False),
        T.StructField("reference_films", T.IntegerType(), False),
        T.StructField("reference_value", T.StringType(), False),
        T.StructField("night_value", T.StringType(), False),
        T.StructField("reference", T.StringType(), False),
        T.StructField("monitored_at", T.StringType(), False),
        T.StructField("run_id", T.StringType(), False),
        T.StructField("dataset", T.StringType(), False),
    ]
)


def write_rows(spark: SparkSession, lake: Lake, rows: Sequence[dict[str, Any]]) -> None:
    """Write the nights' rows, replacing the partitions (dataset, run_id) of the nights they hold."""
    if not rows:
        return
    frame = spark.createDataFrame([tuple(r[f.name] for f in SCHEMA.fields) for r in rows], SCHEMA)
    previous = spark.conf.get("spark.sql.sources.partitionOverwriteMode")
    spark.conf.set("spark.sql.sources.partitionOverwriteMode", "dynamic")
    try:
        with tables.table_writer(lake, "monitoring"):
            frame.write.mode("overwrite").partitionBy("dataset", "run_id").parquet(lake.table_url("monitoring"))
    finally:
        spark.conf.set("spark.sql.sources.partitionOverwriteMode", previous)
    tables.register_table(spark, lake, "monitoring")
