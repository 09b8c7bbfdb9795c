"""The SQL server as its users meet it: beeline, a DB-API client, and the same answers as Spark SQL,
DuckDB and pandas over the Parquet; read-only for every client; new runs visible without a restart."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from impala.dbapi import connect

from xray_spark import tables
from xray_spark.registry import set_alias
from xray_spark.score.pipeline import run_scoring
from xray_spark.server.serve import listening
from xray_spark.session import free_port

from .jobs import job_env
from .test_reliability import WRITING_STATEMENTS, _copy_lake, _tree_digest

SERVER = [sys.executable, "-m", "xray_spark.server"]
PATIENT_QUERY = (
    "SELECT patient_id FROM xray.studies GROUP BY patient_id HAVING count(*) >= 3 ORDER BY patient_id LIMIT 1"
)


def _server(command: str, state: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*SERVER, command, "--state-dir", str(state), *args],
        cwd=cwd,
        env=job_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def served(spark, prepared, small_model, tmp_path_factory):
    """A scored lake of its own with a champion, and a server on it: (settings, lake, port, state dir)."""
    root = tmp_path_factory.mktemp("served")
    settings, lake = _copy_lake(prepared, root / "lake")
    set_alias(spark, lake, small_model["version"], reason="the test's model")
    run_scoring(spark, lake, settings, new_only=True)
    port = free_port()
    state = root / "state"
    started = _server(
        "start",
        state,
        "--lake",
        lake.root,
        "--port",
        str(port),
        "--set",
        "sql_server.refresh_seconds=1",
        "--set",
        "spark.driver_memory=1g",
        "--set",
        "spark.shuffle_partitions=2",
        cwd=root,
    )
    try:
        assert started.returncode == 0, started.stderr[-3000:]
        assert started.stdout.strip() == f"jdbc:hive2://127.0.0.1:{port}"
        pid = json.loads((state / "server.pid").read_text())["pid"]
        yield settings, lake, port, state
    finally:  # stopped whatever happened above: no server outlives the tests
        stopped = _server("stop", state, cwd=root)
    assert stopped.returncode == 0 and "sql-server: stopped" in stopped.stderr
    # Nothing left running: not the server's Python, not its JVM (same process group), not the port.
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)
    assert not listening(port)


def _questions(spark) -> dict[str, str]:
    patient = spark.sql(PATIENT_QUERY).first()["patient_id"]
    return {
        "count": "SELECT count(*) AS n FROM xray.predictions",
        "worklist": "SELECT risk_rank, image_id, ROUND(risk_score, 4) AS risk FROM xray.worklist "
        "ORDER BY risk_rank LIMIT 10",
        "join": "SELECT s.split, count(*) AS n, ROUND(avg(p.top_probability), 4) AS mean_top FROM xray.studies s "
        "JOIN xray.latest_predictions p ON s.image_id = p.image_id AND s.dataset = p.dataset "
        "GROUP BY s.split ORDER BY s.split",
        "progression": "SELECT follow_up, ROUND(probability, 4) AS p, ROUND(change, 4) AS change FROM xray.progression "
        f"WHERE patient_id = {patient} AND finding = 'Effusion' ORDER BY follow_up",
    }


def _normal(rows) -> list[tuple]:
    """Rows as tuples of str/float, so that every client's types compare."""

    def cell(v):
        if v is None or (isinstance(v, float) and v != v) or v == "" or v == "NULL":
            return None
        try:
            return float(v)
        except (TypeError, ValueError):
            return str(v)

    return [tuple(cell(v) for v in row) for row in rows]


def _same(a: list[tuple], b: list[tuple]) -> bool:
    if len(a) != len(b):
        return False
    for ra, rb in zip(a, b, strict=True):
        for x, y in zip(ra, rb, strict=True):
            if isinstance(x, float) and isinstance(y, float):
                if abs(x - y) > 2e-4:
                    return False
            elif x != y:
                return False
    return True


@contextlib.contextmanager
def _cursor(port: int, user: str):
    """A DB-API cursor of impyla on the server, closed (with its connection) at the end of the block."""
    conn = connect(host="127.0.0.1", port=port, auth_mechanism="PLAIN", user=user)
    try:
        cursor = conn.cursor()
        yield cursor
        cursor.close()
    finally:
        conn.close()


def _beeline(port: int, sql: str) -> subprocess.CompletedProcess:
    import pyspark

    home = os.path.dirname(pyspark.__file__)
    url = f"jdbc:hive2://127.0.0.1:{port}"
    args = ["--silent=true", "--showHeader=true", "--outputformat=csv2", "-u", url, "-e", sql]
    env = job_env({"SPARK_HOME": home})
    return subprocess.run([f"{home}/bin/beeline", *args], env=env, capture_output=True, text=True, timeout=120)


def _duckdb_answers(lake, patient: int) -> dict[str, list[tuple]]:
    """The same questions over the Parquet files alone (one model, one scoring run: no view logic needed)."""
    con = duckdb.connect()
    predictions = f"read_parquet('{lake.path('tables', 'predictions')}/**/*.parquet', hive_partitioning = true)"
    studies = f"read_parquet('{lake.path('tables', 'studies')}/**/*.parquet', hive_partitioning = true)"
    questions = {
        "count": f"SELECT count(*) FROM {predictions}",
        "worklist": f"SELECT ROW_NUMBER() OVER (ORDER BY risk_score DESC, top_probability DESC, image_id), image_id, "
        f"round(risk_score, 4) FROM {predictions} ORDER BY 1 LIMIT 10",
        "join": f"SELECT s.split, count(*), round(avg(p.top_probability), 4) FROM {studies} s JOIN {predictions} p "
        "ON s.image_id = p.image_id GROUP BY s.split ORDER BY s.split",
        "progression": f"SELECT follow_up, round(p_effusion, 4), round(p_effusion - lag(p_effusion) OVER "
        f"(ORDER BY follow_up), 4) FROM {predictions} WHERE patient_id = {patient} ORDER BY follow_up",
    }
    return {name: _normal(con.execute(sql).fetchall()) for name, sql in questions.items()}


def _pandas_answers(lake, patient: int) -> dict[str, list[tuple]]:
    p = pd.read_parquet(lake.path("tables", "predictions"))
    s = pd.read_parquet(lake.path("tables", "studies"))
    top = p.sort_values(["risk_score", "top_probability", "image_id"], ascending=[False, False, True]).head(10)
    joined = s.merge(p, on="image_id").groupby("split").agg(n=("image_id", "size"), m=("top_probability", "mean"))
    mine = p[p.patient_id == patient].sort_values("follow_up")
    return {
        "count": [(float(len(p)),)],
        "worklist": _normal(zip(range(1, 11), top.image_id, top.risk_score.round(4), strict=True)),
        "join": _normal(joined.reset_index().itertuples(index=False)),
        "progression": _normal(zip(mine.follow_up, mine.p_effusion, mine.p_effusion.diff(), strict=True)),
    }


def test_every_client_gets_the_same_answers(spark, served):
    _, lake, port, _ = served
    tables.register_tables(spark, lake)
    questions = _questions(spark)
    patient = int(spark.sql(PATIENT_QUERY).first()["patient_id"])
    answers = {"spark": {name: _normal(spark.sql(sql).collect()) for name, sql in questions.items()}}
    assert answers["spark"]["count"] == [(160.0,)] and len(answers["spark"]["worklist"]) == 10
    assert len(answers["spark"]["progression"]) >= 3
    answers["impyla"] = {}
    with _cursor(port, "reader") as cursor:
        for name, sql in questions.items():
            cursor.execute(sql)
            answers["impyla"][name] = _normal(cursor.fetchall())
    answers["beeline"] = {}
    for name, sql in questions.items():
        result = _beeline(port, sql)
        assert result.returncode == 0, result.stderr[-2000:]
        rows = list(csv.reader(io.StringIO(result.stdout.strip())))
        answers["beeline"][name] = _normal(rows[1:])  # after the header
    answers["duckdb"] = _duckdb_answers(lake, patient)
    answers["pandas"] = _pandas_answers(lake, patient)
    for client, theirs in answers.items():
        for name in questions:
            assert _same(theirs[name], answers["spark"][name]), (client, name, theirs[name], answers["spark"][name])


def test_every_writing_statement_is_refused_and_the_lake_stays_byte_identical(served):
    _, lake, port, _ = served
    before = _tree_digest(Path(lake.root))
    with _cursor(port, "writer") as cursor:
        for statement in WRITING_STATEMENTS:
            with pytest.raises(Exception, match="refused: ") as caught:
                cursor.execute(statement)
                cursor.fetchall()
            assert "read-only" in str(caught.value), statement
        result = _beeline(port, "DROP VIEW xray.worklist")
        assert result.returncode != 0 and "refused: DropView is not a read-only statement" in result.stderr
        cursor.execute("SELECT count(*) FROM xray.worklist")  # still there for everyone
        assert cursor.fetchall() == [(160,)]
    assert _tree_digest(Path(lake.root)) == before


def test_a_new_run_shows_without_a_restart_and_never_by_halves(spark, served, small_model):
    settings, lake, port, _ = served
    seen: list[int] = []
    done = threading.Event()

    def poll() -> None:
        with _cursor(port, "reader") as cursor:
            while not done.is_set():
                cursor.execute("SELECT count(*) FROM xray.predictions")
                seen.append(cursor.fetchall()[0][0])
                time.sleep(0.1)

    watcher = threading.Thread(target=poll)
    watcher.start()
    try:
        summary = run_scoring(spark, lake, settings, model_version=small_model["version"], new_only=False)
        assert summary["written"] == 160
        published = time.monotonic()
        while seen[-1] != 320 and time.monotonic() - published < 30:
            time.sleep(0.2)
        visible_after = time.monotonic() - published
    finally:
        done.set()
        watcher.join(timeout=60)
    assert seen[-1] == 320, f"the new run was not visible 30 s after it was published: {seen[-5:]}"
    assert set(seen) <= {160, 320}, f"a query saw part of a run: {sorted(set(seen))}"
    assert visible_after < 15


def test_listening_beyond_loopback_without_authentication_is_refused(tmp_path):
    result = _server("start", tmp_path / "state", "--host", "0.0.0.0", "--lake", str(tmp_path / "lake"), cwd=tmp_path)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("sql-server: error:")]
    assert len(errors) == 1 and "refusing to listen on 0.0.0.0 without authentication" in errors[0]
    assert not (tmp_path / "state" / "server.pid").exists(), "nothing was started"
