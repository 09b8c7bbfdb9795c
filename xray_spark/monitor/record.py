"""``xray.monitoring``: one row per night and measure; a rerun of a night replaces that night's rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pyspark.sql import SparkSession

from xray_spark.lake import Lake, catalog, tables

SCHEMA = catalog.schema("monitoring")


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
