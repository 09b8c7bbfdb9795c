"""Read-only SQL (jobs/sql.py and every session of the SQL server): the parsed plan decides, and a
client's SQL reads the lake's registered tables and views only: no file by path, no variable of the
process that runs it."""

from __future__ import annotations

from pathlib import Path

import pytest

from xray_spark.errors import UsageError
from xray_spark.lake import tables
from xray_spark.readonly import check_read_only, client_session, query_text
from xray_spark.score.pipeline import run_scoring

from .jobs import run_in_process
from .lakes import copy_lake, tree_digest

# -- a reader cannot write ------------------------------------------------------------------------
#: Statements that write or change anything (also tried through the SQL server: test_sql_server.py).
WRITING_STATEMENTS = [
    "INSERT INTO xray.predictions SELECT * FROM xray.predictions",
    "INSERT OVERWRITE DIRECTORY '/tmp/x' USING parquet SELECT 1 AS x",
    "WITH a AS (SELECT 1) INSERT INTO t SELECT * FROM a",
    "FROM xray.predictions INSERT INTO t SELECT *",
    "CREATE TABLE t AS SELECT 1",
    "CREATE TABLE xray.t (a INT) USING parquet",
    "DROP TABLE xray.predictions",
    "ALTER TABLE xray.predictions SET TBLPROPERTIES ('a' = 'b')",
    "CREATE VIEW xray.v AS SELECT 1",
    "DROP VIEW xray.worklist",
    "ALTER VIEW xray.worklist AS SELECT 1",
    "LOAD DATA LOCAL INPATH '/tmp/x' INTO TABLE xray.predictions",
    "CACHE TABLE xray.predictions",
    "UNCACHE TABLE xray.predictions",
    "CLEAR CACHE",
    "REFRESH TABLE xray.predictions",
    "CREATE TEMPORARY VIEW v AS SELECT 1",
    "SET spark.sql.warehouse.dir=/tmp",
    "SET spark.sql.catalog.other=org.apache.spark.sql.execution.datasources.v2.jdbc.JDBCTableCatalog",
    "SET hive.exec.scratchdir=/tmp",
    "ADD JAR /tmp/x.jar",
    "ADD FILE /tmp/x.txt",
    "MERGE INTO t USING u ON t.a = u.a WHEN MATCHED THEN DELETE",
    "DELETE FROM xray.predictions",
    "EXPLAIN INSERT INTO t SELECT 1",
    "SELECT TRANSFORM(a) USING 'rm -rf /' FROM t",
    "SELECT reflect('java.lang.System', 'exit', 0)",
    "SELECT * FROM t WHERE a IN (SELECT java_method('java.lang.System', 'exit', 0))",
    "/* SELECT */ insert INTO t SELECT 1",
]


@pytest.mark.parametrize(
    "query",
    [
        "SELECT 1",
        "WITH a AS (SELECT 1 AS x) SELECT * FROM a",
        "SELECT a, ROW_NUMBER() OVER (PARTITION BY a ORDER BY b) FROM t WHERE a IN (SELECT a FROM u) LIMIT 3",
        "SELECT a, count(*) FROM t GROUP BY a HAVING count(*) > 1 UNION ALL SELECT 1, 2",
        "SELECT * FROM t LATERAL VIEW explode(xs) e AS x",
        "VALUES (1, 2)",
        "TABLE t",
        "SHOW TABLES IN xray",
        "DESCRIBE xray.predictions",
        "EXPLAIN SELECT 1",
        "SHOW COLUMNS IN xray.predictions",
        "USE xray",
        "SET",
        "SET spark.sql.session.timeZone",
        "SET spark.sql.session.timeZone=Europe/Paris",
        "SET TIME ZONE 'UTC'",
        "SET spark.sql.adaptive.enabled=false",
        "RESET",
    ],
)
def test_queries_and_metadata_statements_are_allowed(spark, query):
    check_read_only(spark, query)


def test_a_refused_statement_leaves_the_lake_byte_identical(spark, prepared, small_model, tmp_path):
    settings, lake = copy_lake(prepared, tmp_path / "lake")
    run_scoring(spark, lake, settings, model_version=small_model["version"], new_only=True)
    before = tree_digest(Path(lake.root))
    for query in (
        "INSERT INTO xray.predictions SELECT * FROM xray.predictions",
        f"INSERT OVERWRITE DIRECTORY '{lake.root}/tables/predictions' USING parquet SELECT 1 AS x",
    ):
        result = run_in_process("sql", ["--lake", lake.root, query])
        assert result.returncode == 2 and "sql: error: refused:" in result.stderr
    assert tree_digest(Path(lake.root)) == before


#: Relations that are not the lake's tables or views: files by path (any data source), other catalogs.
FILE_READS = [
    "SELECT value FROM text.`/srv/keys/hospital.key`",
    "SELECT * FROM csv.`/etc/passwd`",
    "SELECT * FROM parquet.`/lake/tables/predictions`",
    "SELECT * FROM binaryFile.`/etc`",
    "SELECT * FROM json.`file:///etc/hosts`",
    "SELECT * FROM `/etc/passwd`",
    "SELECT * FROM xray.predictions p JOIN text.`/etc/shadow` t ON true",
    "WITH a AS (SELECT * FROM orc.`/x`) SELECT * FROM a",
    "SELECT * FROM xray.predictions WHERE image_id IN (SELECT value FROM text.`/k`)",
    "SELECT * FROM xray.predictions WHERE EXISTS (SELECT 1 FROM avro.`/k`)",
    "DESCRIBE parquet.`/lake/tables/predictions`",
    "SHOW COLUMNS IN text.`/k`",
    "SELECT * FROM evil.db.t",
    "SELECT * FROM spark_catalog.other.t",
]


@pytest.mark.parametrize(
    ("query", "said"),
    [(q, "the lake is read-only here") for q in WRITING_STATEMENTS]
    + [(q, "is not a table or view of the lake") for q in FILE_READS],
)
def test_what_writes_or_reads_beyond_the_lakes_tables_is_refused_on_the_parsed_plan(spark, query, said):
    """Statements that change anything, and relations that are not the lake's tables or views (files by path)."""
    with pytest.raises(UsageError, match=rf"^refused: .*{said}"):
        check_read_only(spark, query)


@pytest.mark.parametrize(
    "query",
    ["SELECT * FROM xray.predictions", "SELECT * FROM spark_catalog.xray.worklist", "SELECT * FROM global_temp.v"],
)
def test_the_lakes_tables_by_any_of_their_names_are_allowed(spark, query):
    check_read_only(spark, query)


def test_the_sql_job_reads_no_file_and_no_variable(spark, prepared, tmp_path):
    """The hostile test's key file (mode 600, outside the lake) and ``${...}`` substitution, through query_text."""
    _, lake, _ = prepared
    tables.register_tables(spark, lake)
    key = tmp_path / "hospital.key"
    key.write_text("secret-key-material-4f1c\n")
    key.chmod(0o600)
    with pytest.raises(UsageError) as refused:
        query_text(spark, f"SELECT value FROM text.`{key}`")
    assert str(refused.value).startswith("refused: ") and "secret-key-material" not in str(refused.value)
    # With the plan check out of the way, Spark's own SQL-on-files is off too in a client's session.
    with client_session(spark), pytest.raises(Exception, match="TABLE_OR_VIEW_NOT_FOUND"):
        spark.sql(f"SELECT value FROM text.`{key}`").collect()
    for variable in ("system:user.home", "spark:spark.app.name", "env:PATH", "hiveconf:spark.app.name"):
        shown = query_text(spark, f"SELECT '${{{variable}}}' AS v", fmt="csv")
        assert shown == f"v\n${{{variable}}}", f"{variable} was substituted: {shown!r}"
    # The job's own session is left as it was for the code that reads the lake by path.
    assert spark.conf.get("spark.sql.runSQLOnFiles") == "true"
    assert query_text(spark, "SELECT count(*) AS n FROM xray.studies", fmt="csv") == "n\n160"
