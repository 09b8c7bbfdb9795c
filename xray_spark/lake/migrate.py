"""Bring a lake written by an earlier release to the catalog's column names, once, before a job uses it.

A column the catalog renamed (:attr:`xray_spark.lake.declare.Column.formerly`) is renamed in the table's
files: the table is read whole, written beside itself with the new name, and swapped in, under the table's
writer lock, so no reader ever meets two names for one thing. ``tables/_names`` records the catalog's names
once the lake holds them, so a job's check costs one file lookup.
"""

from __future__ import annotations

import json
import logging

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from xray_spark.lake import Lake, catalog

log = logging.getLogger(__name__)

#: Bumped whenever a catalog column gains a ``formerly``.
NAMES_VERSION = 2
MARKER = ("tables", "_names")


def migrate(spark: SparkSession, lake: Lake) -> list[str]:
    """Rename the former columns of every table of the lake that still has them; the tables changed."""
    if lake.exists(lake.path(*MARKER)) and _recorded(lake) >= NAMES_VERSION:
        return []
    from xray_spark.lake import tables

    changed = []
    for name, table in catalog.TABLES.items():
        renamed = table.renamed()
        if renamed and tables.exists_in_lake(spark, lake, name):
            with tables.table_writer(lake, name):
                if _rename_columns(spark, lake, name, renamed):
                    changed.append(name)
    if changed or any(tables.exists_in_lake(spark, lake, n) for n in catalog.TABLES):
        lake.write_json(lake.path(*MARKER), {"names_version": NAMES_VERSION})
    return changed


def _recorded(lake: Lake) -> int:
    try:
        return int(lake.read_json(lake.path(*MARKER)).get("names_version", 0))
    except (ValueError, OSError, AttributeError, json.JSONDecodeError):
        return 0


def _files_name(lake: Lake, name: str, former: set[str]) -> bool:
    """Whether any Parquet file of ``xray.<name>`` has a column of ``former``: its footers read, no Spark job."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    fs, path = lake.filesystem(lake.path("tables", name))
    for info in fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True)):
        hidden = any(part.startswith(("_", ".")) for part in info.path[len(path) :].split("/") if part)
        if info.type == pafs.FileType.File and info.path.endswith(".parquet") and not hidden:
            with fs.open_input_file(info.path) as stream:
                if former & set(pq.read_schema(stream).names):
                    return True
    return False


def _rename_columns(spark: SparkSession, lake: Lake, name: str, renamed: dict[str, str]) -> bool:
    """Rewrite ``xray.<name>`` with its former columns renamed; False when its files have none."""
    if not _files_name(lake, name, set(renamed)):
        return False
    table = catalog.table(name)
    url = lake.table_url(name)
    data = spark.read.option("mergeSchema", "true").parquet(url)
    old = [c for c in data.columns if c in renamed]
    picked = []
    for column in data.columns:
        if column in renamed:
            new = renamed[column]
            value = F.coalesce(F.col(new), F.col(column)) if new in data.columns else F.col(column)
            picked.append(value.alias(new))
        elif column not in renamed.values():
            picked.append(F.col(column))
    here, staged, retired = (lake.path("tables", n) for n in (name, f"_migrating_{name}", f"_retired_{name}"))
    lake.delete_dir(staged)
    writer = data.select(*picked).write.mode("overwrite")
    if table.partitioned_by:
        writer = writer.partitionBy(*table.partitioned_by)
    writer.parquet(lake.url_of(staged))
    lake.delete_dir(retired)
    lake.move(here, retired)
    lake.move(staged, here)
    lake.delete_dir(retired)
    log.warning("xray.%s: renamed %s, as this release names them", name, ", ".join(f"{o} to {renamed[o]}" for o in old))
    return True
