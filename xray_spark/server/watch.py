"""New scoring runs (and other table changes) reach the server's catalog without a restart.

Every ``sql_server.refresh_seconds`` the server lists each table's folder in the lake (two
levels: ``score_date=D/run_id=R`` for the prediction tables) and compares names and
modification times with the last look. For a table that changed, it adds the new
partitions to the catalog and drops Spark's cached file listing (``REFRESH TABLE``); a
table that appeared is registered; when the predictions, models, aliases or studies
changed, the views are re-created (``CREATE OR REPLACE VIEW``, one catalog update each).

Why a query never sees half a run: a scoring run publishes with one directory rename
(:mod:`xray_spark.score.publish`), so any listing holds a run whole or not at all, and a
query keeps the listing it was planned with: a query that runs while a run publishes or
the catalog refreshes sees the old rows or the new ones. When a table's columns change (a
model with another label set adds ``p_`` columns), the table is registered anew: a query
that starts in that moment can fail with "table not found"; rerun it.

Why :data:`CACHED_VIEWS` are held in memory: every worklist, progression and prevalence
question starts from ``xray.latest_predictions``, and computing it means ranking every
prediction row of the lake by image (a shuffle and sort of the whole table); the worklist
and progression rank those rows again. The server computes them once when it starts and
again each time their inputs change (:func:`cache_views`); the clients' queries then read
the computed rows (Spark substitutes a cached plan wherever it appears, inside the other
views too). A refresh drops the old rows before the views are re-created, so a query never
answers from a lake that has changed since.
"""

from __future__ import annotations

import logging
import os

from pyspark.sql import SparkSession

from xray_spark.lake import Lake, tables

log = logging.getLogger(__name__)

#: Tables whose change re-creates the views.
VIEW_INPUTS = frozenset({"predictions", "models", "model_aliases", "studies"})
#: The views the server keeps computed in memory, each after the ones it is built on.
CACHED_VIEWS = ("latest_predictions", "worklist", "progression")


def cache_views(spark: SparkSession, *, cached: bool = True) -> None:
    """Compute :data:`CACHED_VIEWS` now and keep their rows in memory for every session of the server (``cached``
    False: drop them)."""
    for view in CACHED_VIEWS:
        name = tables.qualified(view)
        if spark.catalog.tableExists(name):
            spark.sql(f"CACHE TABLE {name}" if cached else f"UNCACHE TABLE IF EXISTS {name}")


def fingerprint(folder: str) -> tuple[tuple[str, int], ...]:
    """Names and modification times of a table folder's entries, two levels deep (no staging, no hidden)."""
    if not os.path.isdir(folder):
        return ()
    out = []
    for name in sorted(os.listdir(folder)):
        if name.startswith(("_", ".")):
            continue
        path = os.path.join(folder, name)
        out.append((name, os.stat(path).st_mtime_ns))
        if os.path.isdir(path):
            out.extend(
                (f"{name}/{child}", os.stat(os.path.join(path, child)).st_mtime_ns)
                for child in sorted(os.listdir(path))
                if not child.startswith(("_", "."))
            )
    return tuple(out)


class LakeWatcher:
    """Brings the ``xray`` catalog of one session up to date with the lake's table folders."""

    def __init__(self, spark: SparkSession, lake: Lake) -> None:
        self.spark = spark
        self.lake = lake
        self.seen = {name: self._look(name) for name in tables.TABLES}

    def _look(self, name: str) -> tuple[tuple[str, int], ...]:
        return fingerprint(self.lake.path("tables", name))

    def refresh(self) -> list[str]:
        """Apply what changed since the last look; returns the tables that changed."""
        now = {name: self._look(name) for name in tables.TABLES}
        changed = [name for name in tables.TABLES if now[name] != self.seen[name]]
        views_change = bool(VIEW_INPUTS & set(changed))
        if views_change:
            cache_views(self.spark, cached=False)
        for name in changed:
            self._refresh_table(name)
        if views_change and self.spark.catalog.tableExists(tables.qualified("predictions")):
            tables.create_views(self.spark)
            cache_views(self.spark)
        self.seen = now  # only once all of it worked: a failed refresh is tried again at the next look
        if changed:
            log.info("lake changed: %s refreshed", ", ".join(changed))
        return changed

    def _refresh_table(self, name: str) -> None:
        qualified = tables.qualified(name)
        if not tables.exists_in_lake(self.spark, self.lake, name):
            return
        if not self.spark.catalog.tableExists(qualified):
            tables.register_table(self.spark, self.lake, name)
            return
        on_disk = self.spark.read.option("mergeSchema", "true").parquet(self.lake.table_url(name)).schema
        if {f.name for f in on_disk.fields} != {f.name for f in self.spark.table(qualified).schema.fields}:
            tables.register_table(self.spark, self.lake, name)  # new columns: registered anew
            return
        if any(column.isPartition for column in self.spark.catalog.listColumns(qualified)):
            self.spark.catalog.recoverPartitions(qualified)
        self.spark.catalog.refreshTable(qualified)
