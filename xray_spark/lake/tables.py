"""The catalog: the lake's Parquet tables registered as the ``xray`` database.

The lake is the source of truth. Each table is a Parquet directory under
``lake/tables/<name>``; :func:`register_tables` (re)creates ``xray.<name>`` as an external
table over it, so every process (a job, ``jobs/sql.py``, ``spark-sql``) sees the same
tables without sharing a metastore lock. With ``spark.sql.catalogImplementation=hive``
and an external metastore, the same calls register them there.
"""

from __future__ import annotations

import contextlib

from pyspark.sql import DataFrame, SparkSession

from xray_spark import locks
from xray_spark.lake import Lake, catalog

DATABASE = "xray"

#: Tables that the jobs write, by name; each at ``lake/tables/<name>`` (declared in :mod:`xray_spark.lake.catalog`).
TABLES: tuple[str, ...] = catalog.TABLE_NAMES

#: The model alias that scoring and evaluation use by default, and the views prefer.
CHAMPION = "champion"

#: ``patient`` in the views: the patient across datasets, ``<dataset>/<patient_id>`` (patient 7 of nih is not
#: patient 7 of a hospital), as :func:`xray_spark.scored.patient_of` spells it.
PATIENT_SQL = "concat(dataset, '/', CAST(patient_id AS STRING))"

#: A finding whose probability rose by at least this much between two follow-ups is flagged.
RISING = 0.2


def qualified(name: str) -> str:
    return f"{DATABASE}.{name}"


def _data_entries(spark: SparkSession, lake: Lake, name: str) -> list[tuple[str, bool]]:
    """(name, is a directory) of what ``lake/tables/<name>`` holds, leaving out ``_`` and ``.`` entries."""
    jvm = spark.sparkContext._jvm
    hadoop_conf = spark.sparkContext._jsc.hadoopConfiguration()
    path = jvm.org.apache.hadoop.fs.Path(lake.table_url(name))
    fs = path.getFileSystem(hadoop_conf)
    if not fs.exists(path):
        return []
    entries = [(s.getPath().getName(), bool(s.isDirectory())) for s in fs.listStatus(path)]
    return [(n, d) for n, d in entries if not n.startswith(("_", "."))]


def exists_in_lake(spark: SparkSession, lake: Lake, name: str) -> bool:
    return bool(_data_entries(spark, lake, name))


def register_table(spark: SparkSession, lake: Lake, name: str) -> None:
    """Point ``xray.<name>`` at ``lake/tables/<name>`` (replacing an older registration), with the catalog's
    columns and their comments; a table whose columns depend on the data, with the columns of its files."""
    table = catalog.table(name)
    # A table whose columns depend on the data (prediction tables of models with other label sets have other p_
    # columns): every column its files hold, merged, each with its comment.
    found = None
    if table.more_columns:
        found = spark.read.option("mergeSchema", "true").parquet(lake.table_url(name)).schema
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
    spark.sql(f"DROP TABLE IF EXISTS {qualified(name)}")
    spark.sql(table.ddl(lake.table_url(name), qualified(name), found))
    # Partitioned: its top folders are ``column=value``. Asked of the file system, not the
    # catalog (listColumns), which costs a cold job's first catalog query noticeably more.
    if any(is_dir and "=" in entry for entry, is_dir in _data_entries(spark, lake, name)):
        spark.catalog.recoverPartitions(qualified(name))


def _registered_from(spark: SparkSession, lake: Lake, name: str) -> bool:
    """Whether ``xray.<name>`` is registered, and from this lake (a session may have served another)."""
    if not spark.catalog.tableExists(qualified(name)):
        return False
    rows = spark.sql(f"DESCRIBE TABLE EXTENDED {qualified(name)}").where("col_name = 'Location'").collect()
    return bool(rows) and rows[0]["data_type"].rstrip("/") == lake.table_url(name).rstrip("/")


def register_tables(spark: SparkSession, lake: Lake) -> list[str]:
    """Register every table that exists in the lake; returns their qualified names."""
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
    registered = []
    for name in TABLES:
        if exists_in_lake(spark, lake, name):
            register_table(spark, lake, name)
            registered.append(qualified(name))
        else:  # a table of another lake this session served: the views must not join it
            spark.sql(f"DROP TABLE IF EXISTS {qualified(name)}")
    if qualified("predictions") in registered:
        registered.extend(create_views(spark))
    return registered


def ensure_registered(spark: SparkSession, lake: Lake) -> list[str]:
    """The catalog for a job that queries ``xray.*`` by name: registered once per job, not again when an earlier
    step of the same session (the nightly flow's score) has just registered this lake's predictions and views."""
    views = [qualified(v) for v in ("latest_predictions", "worklist", "progression")]
    if _registered_from(spark, lake, "predictions") and all(spark.catalog.tableExists(v) for v in views):
        return [qualified("predictions"), *views]
    return register_tables(spark, lake)


def register_predictions(spark: SparkSession, lake: Lake) -> list[str]:
    """(Re)register ``xray.predictions`` and its views after a scoring run."""
    if not exists_in_lake(spark, lake, "predictions"):
        return []
    # The views' other inputs: accession numbers and study times, model times, the champion.
    for name in ("studies", "models", "model_aliases"):
        if not exists_in_lake(spark, lake, name):
            spark.sql(f"DROP TABLE IF EXISTS {qualified(name)}")  # another lake's, from earlier in this session
        elif not _registered_from(spark, lake, name):
            register_table(spark, lake, name)
    register_table(spark, lake, "predictions")
    if exists_in_lake(spark, lake, "heatmaps"):
        register_table(spark, lake, "heatmaps")
    return [qualified("predictions"), *create_views(spark)]


def create_views(spark: SparkSession) -> list[str]:
    """``xray.latest_predictions``, ``xray.worklist`` and ``xray.progression`` over ``xray.predictions``.

    * latest_predictions: per dataset and image still in its store (in ``xray.studies``),
      the row of the champion model (the version
      that ``xray.model_aliases`` names ``champion`` now) where it scored the image, else of
      the newest model version (by its ``created`` time in ``xray.models``); of that version
      the newest scoring.
    * worklist: per dataset, the studies scored on its latest scoring date, riskiest first
      (``risk_rank`` 1 = the highest ``risk_score``, then the highest top probability, then
      the image id), the findings called with their probabilities, and the accession
      number and study date and time that lead back to the study in the PACS.
    * progression: per patient and finding, the probability at each follow-up, the change
      since the previous follow-up, and ``rising`` when it went up by at least 0.2. A
      patient's films are in study date and time order where the header gave one (DICOM),
      else in follow-up order.
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
    if spark.catalog.tableExists(qualified("model_aliases")):
        order = f"(c.version IS NOT NULL) DESC, {order}"
        join += f"""
          LEFT JOIN (SELECT version FROM (
            SELECT version, ROW_NUMBER() OVER (ORDER BY set_at DESC) AS _n
            FROM {qualified("model_aliases")} WHERE alias = '{CHAMPION}') WHERE _n = 1) c
          ON p.model_version = c.version"""
    if spark.catalog.tableExists(qualified("studies")):  # films no longer in their store (a --replace) drop out
        join += f"""
          LEFT SEMI JOIN {qualified("studies")} st ON p.dataset = st.dataset AND p.image_id = st.image_id"""
    spark.sql(f"""
        CREATE OR REPLACE VIEW {qualified("latest_predictions")} AS
        SELECT {plain}, {PATIENT_SQL} AS patient FROM (
          SELECT {listed}, ROW_NUMBER() OVER (PARTITION BY p.dataset, p.image_id ORDER BY {order}) AS _rank
          FROM {qualified("predictions")} p {join}
        ) WHERE _rank = 1
    """)
    studies = _study_columns(spark)
    _create_worklist(spark, columns, studies)
    names = {probability_column(f): f for f in FINDINGS}
    pairs = [(names[c], c) for c in columns if c in names]
    stack = ", ".join(f"'{finding}', p.`{col}`" for finding, col in pairs)
    spark.sql(f"""
        CREATE OR REPLACE VIEW {qualified("progression")} AS
        SELECT dataset, patient, patient_id, finding, follow_up, study_datetime, image_id, model_version, probability,
               LAG(follow_up) OVER w AS previous_follow_up,
               LAG(probability) OVER w AS previous_probability,
               probability - LAG(probability) OVER w AS change,
               COALESCE(probability - LAG(probability) OVER w >= {RISING}, false) AS rising
        FROM (
          SELECT p.dataset, p.patient, p.patient_id, p.follow_up, p.image_id, p.model_version,
                 {studies["study_datetime"]} AS study_datetime,
                 stack({len(pairs)}, {stack}) AS (finding, probability)
          FROM {qualified("latest_predictions")} p {studies["join"]}
        ) long  -- a subquery, not WITH: a CTE gets a new id each time it is read, and no cached copy would match
        WHERE probability IS NOT NULL
        WINDOW w AS (PARTITION BY dataset, patient_id, finding ORDER BY study_datetime ASC NULLS LAST, follow_up)
    """)
    return [qualified("latest_predictions"), qualified("worklist"), qualified("progression")]


def _create_worklist(spark: SparkSession, columns: list[str], studies: dict[str, str]) -> None:
    """``xray.worklist``: per dataset, its latest scoring date's films by risk (:mod:`xray_spark.risk`)."""
    from xray_spark.labels import FINDINGS, probability_column
    from xray_spark.risk import order_sql

    present = [(f, probability_column(f)) for f in FINDINGS if probability_column(f) in columns]
    probabilities = ", ".join(f"'{finding}', p.`{col}`" for finding, col in present)
    called = (
        f"concat_ws(', ', transform(p.called, f -> "
        f"concat(f, ' ', format_number(element_at(map({probabilities}), f), 2))))"
    )
    # Predictions from before risk scores order by the top probability (risk_score null for all).
    risk = "p.risk_score, p.risk_finding" if "risk_score" in columns else "CAST(NULL AS FLOAT), CAST(NULL AS STRING)"
    score, finding = risk.split(", ")
    spark.sql(f"""
        CREATE OR REPLACE VIEW {qualified("worklist")} AS
        SELECT ROW_NUMBER() OVER (PARTITION BY dataset ORDER BY {order_sql()}) AS risk_rank, *
        FROM (
          SELECT {score} AS risk_score, {finding} AS risk_finding, {called} AS called_probabilities,
               p.image_id, p.patient, p.patient_id, p.follow_up, p.view, p.top_finding, p.top_probability, p.called,
               {studies["accession_number"]} AS accession_number, {studies["study_datetime"]} AS study_datetime,
               p.dataset, p.model_version, p.scored_at, p.score_date
          FROM (SELECT *, MAX(score_date) OVER (PARTITION BY dataset) AS _last FROM {qualified("latest_predictions")}) p
          {studies["join"]}
          WHERE p.score_date = p._last
        )
    """)


def _study_columns(spark: SparkSession) -> dict[str, str]:
    """The join to ``xray.studies`` for its DICOM columns, or nulls when the lake has no such table."""
    if spark.catalog.tableExists(qualified("studies")):
        names = {f.name for f in spark.table(qualified("studies")).schema.fields}
        if {"accession_number", "study_datetime"} <= names:
            join = f"LEFT JOIN {qualified('studies')} s ON p.dataset = s.dataset AND p.image_id = s.image_id"
            return {"join": join, "accession_number": "s.accession_number", "study_datetime": "s.study_datetime"}
    return {"join": "", "accession_number": "CAST(NULL AS STRING)", "study_datetime": "CAST(NULL AS TIMESTAMP)"}


#: How long a write to a shared table waits for another run's write to the same table.
TABLE_WAIT_S = 900.0


def table_writer(lake: Lake, name: str) -> contextlib.AbstractContextManager:
    """One writer of table ``name`` at a time, whatever dataset it writes: Spark's committer keeps its
    ``_temporary`` folder in the table's folder, and two commits there lose each other's files."""
    return locks.lake_lock(lake, f"table-{name}", job=f"write of xray.{name}", wait_seconds=TABLE_WAIT_S)


def write_table(df: DataFrame, lake: Lake, name: str, *, mode: str) -> None:
    """Write ``df`` as table ``name`` (``mode`` ``overwrite`` or ``append``) and register it."""
    with table_writer(lake, name):
        df.write.mode(mode).parquet(lake.table_url(name))
    register_table(df.sparkSession, lake, name)


def write_table_partitioned(df: DataFrame, lake: Lake, name: str, *, register: bool = True) -> None:
    """Append ``df`` to table ``name``, partitioned by its ``dataset`` column, and register it (unless a run that
    appends many times registers it once at its end)."""
    with table_writer(lake, name):
        df.write.mode("append").partitionBy("dataset").parquet(lake.table_url(name))
    if register:
        register_table(df.sparkSession, lake, name)


def read_table(spark: SparkSession, lake: Lake, name: str) -> DataFrame | None:
    """The table as a DataFrame, or None when the lake does not have it yet."""
    catalog.table(name)  # a name the catalog does not declare is an error here, not an empty table
    if not exists_in_lake(spark, lake, name):
        return None
    return spark.read.parquet(lake.table_url(name))
