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
TABLES: tuple[str, ...] = (
    "studies",
    "quarantine",
    "boxes",
    "models",
    "predictions",
    "evaluations",
    "dicom_instances",
    "patient_keys",
)

#: A finding whose probability rose by at least this much between two follow-ups is flagged.
RISING = 0.2


def qualified(name: str) -> str:
    return f"{DATABASE}.{name}"


def exists_in_lake(spark: SparkSession, lake: Lake, name: str) -> bool:
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
    # mergeSchema: prediction tables of models with other label sets have other p_ columns.
    spark.catalog.createTable(qualified(name), path=lake.table_url(name), source="parquet", mergeSchema="true")
    if any(column.isPartition for column in spark.catalog.listColumns(qualified(name))):
        spark.catalog.recoverPartitions(qualified(name))


def register_tables(spark: SparkSession, lake: Lake) -> list[str]:
    """Register every table that exists in the lake; returns their qualified names."""
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
    registered = []
    for name in TABLES:
        if exists_in_lake(spark, lake, name):
            register_table(spark, lake, name)
            registered.append(qualified(name))
    if qualified("predictions") in registered:
        registered.extend(create_views(spark))
    return registered


def register_predictions(spark: SparkSession, lake: Lake) -> list[str]:
    """(Re)register ``xray.predictions`` and its views after a scoring run."""
    if not exists_in_lake(spark, lake, "predictions"):
        return []
    register_table(spark, lake, "predictions")
    return [qualified("predictions"), *create_views(spark)]


def create_views(spark: SparkSession) -> list[str]:
    """``xray.latest_predictions``, ``xray.worklist`` and ``xray.progression`` over ``xray.predictions``.

    * latest_predictions: per dataset and image, the row of the newest model version (by
      its ``created`` time in ``xray.models``), and of that version the newest scoring.
    * worklist: the studies scored on the latest scoring date, riskiest first
      (``risk_rank`` 1 = the most findings called positive, then the highest top probability).
    * progression: per patient and finding, the probability at each follow-up, the change
      since the previous follow-up, and ``rising`` when it went up by at least 0.2.
    """
    from xray_spark.labels import FINDINGS, probability_column

    columns = [f.name for f in spark.table(qualified("predictions")).schema.fields]
    listed = ", ".join(f"p.`{c}`" for c in columns)
    plain = ", ".join(f"`{c}`" for c in columns)
    has_models = spark.catalog.tableExists(qualified("models"))
    order = (
        "m.created DESC, p.model_version DESC, p.scored_at DESC"
        if has_models
        else ("p.model_version DESC, p.scored_at DESC")
    )
    join = f"LEFT JOIN {qualified('models')} m ON p.model_version = m.version" if has_models else ""
    spark.sql(f"""
        CREATE OR REPLACE VIEW {qualified("latest_predictions")} AS
        SELECT {plain} FROM (
          SELECT {listed}, ROW_NUMBER() OVER (PARTITION BY p.dataset, p.image_id ORDER BY {order}) AS _rank
          FROM {qualified("predictions")} p {join}
        ) WHERE _rank = 1
    """)
    spark.sql(f"""
        CREATE OR REPLACE VIEW {qualified("worklist")} AS
        SELECT ROW_NUMBER() OVER (ORDER BY size(positive_findings) DESC, top_probability DESC, image_id) AS risk_rank,
               image_id, patient_id, follow_up, view, top_finding, top_probability, positive_findings,
               dataset, model_version, scored_at, score_date
        FROM {qualified("latest_predictions")}
        WHERE score_date = (SELECT MAX(score_date) FROM {qualified("latest_predictions")})
    """)
    names = {probability_column(f): f for f in FINDINGS}
    pairs = [(names[c], c) for c in columns if c in names]
    stack = ", ".join(f"'{finding}', `{col}`" for finding, col in pairs)
    spark.sql(f"""
        CREATE OR REPLACE VIEW {qualified("progression")} AS
        WITH long AS (
          SELECT dataset, patient_id, follow_up, image_id, model_version,
                 stack({len(pairs)}, {stack}) AS (finding, probability)
          FROM {qualified("latest_predictions")}
        )
        SELECT dataset, patient_id, finding, follow_up, image_id, model_version, probability,
               LAG(follow_up) OVER w AS previous_follow_up,
               LAG(probability) OVER w AS previous_probability,
               probability - LAG(probability) OVER w AS change,
               COALESCE(probability - LAG(probability) OVER w >= {RISING}, false) AS rising
        FROM long
        WHERE probability IS NOT NULL
        WINDOW w AS (PARTITION BY dataset, patient_id, finding ORDER BY follow_up)
    """)
    return [qualified("latest_predictions"), qualified("worklist"), qualified("progression")]


def write_table(df: DataFrame, lake: Lake, name: str, *, mode: str) -> None:
    """Write ``df`` as table ``name`` (``mode`` ``overwrite`` or ``append``) and register it."""
    df.write.mode(mode).parquet(lake.table_url(name))
    register_table(df.sparkSession, lake, name)


def write_table_partitioned(df: DataFrame, lake: Lake, name: str) -> None:
    """Append ``df`` to table ``name``, partitioned by its ``dataset`` column, and register it."""
    df.write.mode("append").partitionBy("dataset").parquet(lake.table_url(name))
    register_table(df.sparkSession, lake, name)


def read_table(spark: SparkSession, lake: Lake, name: str) -> DataFrame | None:
    """The table as a DataFrame, or None when the lake does not have it yet."""
    if not exists_in_lake(spark, lake, name):
        return None
    return spark.read.parquet(lake.table_url(name))
