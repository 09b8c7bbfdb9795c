"""The rows of ``xray.quarantine``: why an input was not stored.

Nothing is dropped silently: every metadata row ends up in the store, in
``xray.quarantine`` with one of the :data:`~xray_spark.imaging.reasons.REASONS`, or in the run's list of rows without an
image file.
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from xray_spark.lake import Lake, catalog, tables


def quarantine_rows(df: DataFrame, dataset: str, run_id: str, run_time: dt.datetime) -> DataFrame:
    """Rejected rows (with ``reason`` and ``detail``) as ``xray.quarantine`` rows of this run."""
    source = F.col("source_path") if "source_path" in df.columns else F.lit(None).cast("string")
    return df.select(
        "image_id",
        source.alias("source_path"),
        "reason",
        "detail",
        F.lit(dataset).alias("dataset"),
        F.lit(run_id).alias("run_id"),
        F.lit(run_time).cast("timestamp").alias("run_time"),
    )


def append_quarantine(rows: DataFrame, lake: Lake) -> None:
    tables.write_table(rows.select(*catalog.table("quarantine").column_names()), lake, "quarantine", mode="append")


def quarantined_before(rows: DataFrame, lake: Lake, dataset: str, run_ids: list[str]) -> int:
    """How many of ``rows`` the earlier successful runs ``run_ids`` quarantined already (same input, same reason).

    An export that is delivered whole every night brings its broken files again; they were
    reported when first seen and must not count against tonight's quarantine limit. A run
    that failed over the limit is not among ``run_ids``, so rerunning it does not pass.
    """
    if not run_ids:
        return 0
    previous = tables.read_table(rows.sparkSession, lake, "quarantine")
    if previous is None:
        return 0
    keys = ("image_id", "source_path", "reason")
    earlier = (
        previous.where((F.col("dataset") == dataset) & F.col("run_id").isin(run_ids))
        .select(*keys)
        .distinct()
        .alias("e")
    )
    condition = [F.col(f"r.{k}").eqNullSafe(F.col(f"e.{k}")) for k in keys]
    return rows.alias("r").join(earlier, condition, "left_semi").count()
