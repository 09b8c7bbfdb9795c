"""The catalog: the lake's Parquet tables registered as the ``xray`` database.

The lake is the source of truth. Each table is a Parquet directory under
``lake/tables/<name>``; :func:`register_tables` (re)creates ``xray.<name>`` as an external
table over it, so every process (a job, ``jobs/sql.py``, ``spark-sql``) sees the same
tables without sharing a metastore lock. With ``spark.sql.catalogImplementation=hive``
and an external metastore, the same calls register them there.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession

from xray_spark.lake import Lake

DATABASE = "xray"

#: Tables that the jobs write, by name; each lives at ``lake/tables/<name>``.
TABLES: tuple[str, ...] = ("studies", "quarantine", "boxes", "models")


def qualified(name: str) -> str:
    return f"{DATABASE}.{name}"


def _table_exists_in_lake(spark: SparkSession, lake: Lake, name: str) -> bool:
    jvm = spark.sparkContext._jvm
    hadoop_conf = spark.sparkContext._jsc.hadoopConfiguration()
    path = jvm.org.apache.hadoop.fs.Path(lake.table_url(name))
    fs = path.getFileSystem(hadoop_conf)
    if not fs.exists(path):
        return False
    statuses = fs.listStatus(path)
    return any(not s.getPath().getName().startswith(("_", ".")) for s in statuses)


def register_table(spark: SparkSession, lake: Lake, name: str) -> None:
    """Point ``xray.<name>`` at ``lake/tables/<name>`` (replacing an older registration)."""
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
    spark.sql(f"DROP TABLE IF EXISTS {qualified(name)}")
    spark.catalog.createTable(qualified(name), path=lake.table_url(name), source="parquet")
    if any(column.isPartition for column in spark.catalog.listColumns(qualified(name))):
        spark.catalog.recoverPartitions(qualified(name))


def register_tables(spark: SparkSession, lake: Lake) -> list[str]:
    """Register every table that exists in the lake; returns their qualified names."""
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
    registered = []
    for name in TABLES:
        if _table_exists_in_lake(spark, lake, name):
            register_table(spark, lake, name)
            registered.append(qualified(name))
    return registered


def write_table(df: DataFrame, lake: Lake, name: str, *, mode: str) -> None:
    """Write ``df`` as table ``name`` (``mode`` ``overwrite`` or ``append``) and register it."""
    df.write.mode(mode).parquet(lake.table_url(name))
    register_table(df.sparkSession, lake, name)


def read_table(spark: SparkSession, lake: Lake, name: str) -> DataFrame | None:
    """The table as a DataFrame, or None when the lake does not have it yet."""
    if not _table_exists_in_lake(spark, lake, name):
        return None
    return spark.read.parquet(lake.table_url(name))
