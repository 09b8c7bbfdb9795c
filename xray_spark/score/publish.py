"""Publishing a scoring run's rows: staging first, then one directory rename makes them visible.

``lake/tables/<table>/score_date=D/run_id=R`` appears whole or not at all: a run killed
half-way leaves only its staging folder (``lake/tables/_staging/<table>/R``), which readers
never see and a later run removes.
"""

from __future__ import annotations

import os
import shutil
import time

from pyspark.sql import DataFrame

from xray_spark.lake import Lake, same_volume

PREDICTIONS = "predictions"
HEATMAPS = "heatmaps"
STAGING = "_staging"


#: Why scoring needs a local lake (:meth:`~xray_spark.lake.Lake.require_local`).
PUBLISH_NEEDS = "publishes runs with a directory rename"


def publish_run(df: DataFrame, lake: Lake, *, score_date: str, run_id: str, table: str = PREDICTIONS) -> int:
    """Write ``df`` to staging, then rename it into place in one step; returns the rows written."""
    lake.require_local("score", PUBLISH_NEEDS)
    staging = os.path.join(staging_root(lake, table), run_id)
    final_parent = lake.path("tables", table, f"score_date={score_date}")
    df.write.mode("overwrite").parquet(lake.url_of(staging))
    written = df.sparkSession.read.parquet(lake.url_of(staging)).count()
    os.makedirs(final_parent, exist_ok=True)
    os.replace(staging, os.path.join(final_parent, f"run_id={run_id}"))  # the commit: one rename
    return written


def staging_root(lake: Lake, table: str) -> str:
    """Where a run of ``table`` is staged: ``tables/_staging/<table>``, or, when the table's folder is on
    another volume (a symlink to a bigger disk), ``tables/<table>/_staging`` on that volume, which Spark
    does not read (a folder whose name starts with ``_``): the commit stays one rename."""
    table_dir = lake.path("tables", table)
    default = lake.path("tables", STAGING, table)
    os.makedirs(table_dir, exist_ok=True)
    return default if same_volume(default, table_dir) else os.path.join(table_dir, STAGING)


def clean_staging(lake: Lake, older_than_s: float = 0.0) -> list[str]:
    """Remove what killed runs left in staging (never visible to readers); returns what was removed."""
    removed = []
    now = time.time()
    roots = [lake.path("tables", STAGING, t) for t in (PREDICTIONS, HEATMAPS)]
    roots += [lake.path("tables", t, STAGING) for t in (PREDICTIONS, HEATMAPS)]
    for root in roots:
        if not os.path.isdir(root):
            continue
        for name in os.listdir(root):
            path = os.path.join(root, name)
            if now - os.path.getmtime(path) >= older_than_s:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(name)
    return removed
