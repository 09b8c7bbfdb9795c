"""``xray.deliveries``: what was sent where, one row per film, destination and attempt (no patient data).

A run first writes a ``pending`` row for each film and destination it is about to try, then,
in groups of ``deliver.record_every`` films, a ``sent`` row for each the receiver
acknowledged and a ``failed`` row, with the reason, for the others. A film's state at a
destination is its newest row: a run killed mid-way leaves ``pending`` (never ``sent``)
for what it had not recorded, and the next run tries those again with the same UIDs, which
a PACS files as the same instances. ``attempt`` counts the tries that ended (sent, failed or
given up). A film whose source file is not recorded, or has been gone or changed for
``deliver.give_up_after_attempts`` runs, is ``given_up`` with the reason, once; so is a film
not delivered ``deliver.retry_days`` after its first try (a destination down that long), so that
no old failure fails a night.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from xray_spark.lake import Lake, catalog, tables

DELIVERIES = "deliveries"
SENT, FAILED, PENDING = "sent", "failed", "pending"
#: A film whose source can never be used again (no file recorded, or gone or changed for deliver.give_up_after_attempts
#: runs): recorded once with the reason and not tried again (``deliver --retry-given-up`` tries it again).
GIVEN_UP = "given_up"

DELIVERIES_SCHEMA = catalog.schema(DELIVERIES)
_ORDER = {
    PENDING: 0,
    FAILED: 1,
    SENT: 2,
    GIVEN_UP: 3,
}  # within one instant, an outcome wins over the pending row before it


def state(spark: SparkSession, lake: Lake, dataset: str, version: str) -> DataFrame | None:
    """Per film and destination of ``version``'s results: the newest status, the attempts that ended, and when the
    first try began (``first_at``)."""
    table = tables.read_table(spark, lake, DELIVERIES)
    if table is None:
        return None
    rows = table.where((F.col("dataset") == dataset) & (F.col("model_version") == version))
    rank = F.create_map(*[x for k, v in _ORDER.items() for x in (F.lit(k), F.lit(v))])[F.col("status")]
    newest = Window.partitionBy("image_id", "destination").orderBy(F.desc("at"), F.desc(rank))
    pair = Window.partitionBy("image_id", "destination")
    ended = F.sum(F.when(F.col("status") != PENDING, 1).otherwise(0)).over(pair)
    ranked = (
        rows.withColumn("attempts", ended)
        .withColumn("first_at", F.min("at").over(pair))
        .withColumn("_n", F.row_number().over(newest))
    )
    return ranked.where(F.col("_n") == 1).select("image_id", "destination", "status", "attempts", "error", "first_at")


def append(spark: SparkSession, lake: Lake, rows: Sequence[dict[str, Any]], *, register: bool = True) -> None:
    """``rows`` (dicts of :data:`DELIVERIES_SCHEMA`'s columns) appended to ``xray.deliveries``; the catalog
    entry refreshed unless ``register`` is false (a run's groups of outcomes: it registers once, at its end)."""
    if rows:
        names = DELIVERIES_SCHEMA.fieldNames()
        df = spark.createDataFrame([tuple(r.get(n) for n in names) for r in rows], DELIVERIES_SCHEMA)
        tables.write_table_partitioned(df.coalesce(1), lake, DELIVERIES, register=register)
    elif register and tables.exists_in_lake(spark, lake, DELIVERIES):
        tables.register_table(spark, lake, DELIVERIES)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)
