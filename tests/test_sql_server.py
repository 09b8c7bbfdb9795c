"""The SQL server as its users meet it: beeline, a DB-API client, and the same answers as Spark SQL,
DuckDB and pandas over the Parquet; read-only for every client; new runs visible without a restart."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from impala.dbapi import connect

from xray_spark.config import load_settings
from xray_spark.lake import tables
from xray_spark.net import listening
from xray_spark.registry import set_alias
from xray_spark.score.pipeline import run_scoring
from xray_spark.session import free_port
from xray_spark.sql_client import server_state_dir, sql_through_server

from .jobs import job_env
from .lakes import copy_lake, tree_digest
from .test_readonly import WRITING_STATEMENTS

SERVER = [sys.executable, "-m", "xray_spark.server"]
PATIENT_QUERY = (
    "SELECT patient_id FROM xray.studies GROUP BY patient_id HAVING count(*) >= 3 ORDER BY patient_id LIMIT 1"
)


#: What the served server's environment holds as its pseudonym key: no client may read it.
PLANTED_KEY = "planted-pseudonym-key-7d41e9"


def _server(
    command: str, state: Path | None, *args: str, cwd: Path, env: dict | None = None
) -> subprocess.CompletedProcess:
    """``python -m xray_spark.server command`` (with ``--state-dir`` unless ``state`` is None: the lake's own)."""
    return subprocess.run(
        [*SERVER, command, *(["--state-dir", str(state)] if state else []), *args],
        cwd=cwd,
        env=job_env(env),
        capture_output=True,
        text=True,
        timeout=300,
    )


#: The served server's statement timeout, seconds.
STATEMENT_TIMEOUT = 20


@pytest.fixture(scope="module")
def served(spark, prepared, small_model, tmp_path_factory):
    """A scored lake of its own with a champion, and a server on it: (settings, lake, port, state dir)."""
    root = tmp_path_factory.mktemp("served")
    settings, lake = copy_lake(prepared, root / "lake")
    set_alias(spark, lake, small_model["version"], reason="the test's model")
    run_scoring(spark, lake, settings, new_only=True)
    port = free_port()
    # started with no --state-dir: its state is the lake's own folder, which stop (and xray-spark sql) find from --lake
    state = Path(server_state_dir(load_settings(None, [f"lake={lake.root}"])))
    started = _server(
        "start",
        None,
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
        "--set",
        f"sql_server.statement_timeout_seconds={STATEMENT_TIMEOUT}",
        cwd=root,
        env={"XRAY_SPARK_PSEUDONYM_KEY": PLANTED_KEY},
    )
    try:
        assert started.returncode == 0, started.stderr[-3000:]
        assert started.stdout.strip() == f"jdbc:hive2://127.0.0.1:{port}"
        pid = json.loads((state / "server.pid").read_text())["pid"]
        yield settings, lake, port, state
    finally:  # stopped whatever happened above: no server outlives the tests
        stopped = _server("stop", None, "--lake", str(lake.root), cwd=tmp_path_factory.mktemp("elsewhere"))
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
def _cursor(port: int, user: str, configuration: dict | None = None):
    """A DB-API cursor of impyla on the server (``configuration``: the session handshake's settings)."""
    conn = connect(host="127.0.0.1", port=port, auth_mechanism="PLAIN", user=user)
    try:
        cursor = conn.cursor(configuration=configuration)
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


def test_xray_spark_sql_asks_the_running_server_and_says_how_to_start_one_when_none_runs(
    spark, served, tmp_path, capsys
):
    """The launcher's sql answers through the server of its lake (no JVM of its own), DESCRIBE shows every column's
    comment, a write is refused in one line; with no server for the lake it says how to start one."""
    _, lake, _, _ = served

    def sql(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "xray_spark.launch", "sql", "--lake", str(lake.root), *args]
        return subprocess.run(command, cwd=tmp_path, env=job_env(), capture_output=True, text=True, timeout=120)

    counted = sql("--format", "csv", "SELECT count(*) AS n FROM xray.predictions")
    assert counted.returncode == 0 and "answered by the SQL server" in counted.stderr, counted.stderr[-2000:]
    assert counted.stdout.split() == ["n", str(tables.read_table(spark, lake, "predictions").count())]
    assert "SparkContext" not in counted.stderr and not list(tmp_path.iterdir())
    described = sql("--format", "json", "DESCRIBE xray.predictions")
    columns = [json.loads(line) for line in described.stdout.splitlines()]
    columns = columns[: next((i for i, c in enumerate(columns) if c["col_name"].startswith("#")), len(columns))]
    assert len(columns) > 20 and all(c["comment"] for c in columns), [c for c in columns if not c["comment"]]
    refused = sql("DROP VIEW xray.worklist")
    assert refused.returncode == 2 and refused.stderr.startswith("sql: error: query failed"), refused.stderr
    assert sql_through_server(["--lake", str(tmp_path / "no-server"), "SELECT 1"]) is None  # the Spark job answers
    assert "no SQL server serves the lake" in capsys.readouterr().err


def test_every_writing_statement_is_refused_and_the_lake_stays_byte_identical(served):
    _, lake, port, _ = served
    before = tree_digest(Path(lake.root))
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
    assert tree_digest(Path(lake.root)) == before


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
    # The server holds xray.latest_predictions computed in memory: the new run's rows must replace the old ones
    # there too, and in the views built on it.
    run = summary["run_id"]
    newest = f"SELECT count(*) FROM xray.latest_predictions WHERE run_id = '{run}'"
    listed = (  # the same films as before: the new run's rows are told by their scoring time
        "SELECT count(*) FROM xray.worklist w JOIN xray.latest_predictions p "
        f"ON w.image_id = p.image_id AND w.scored_at = p.scored_at WHERE p.run_id = '{run}'"
    )
    with _cursor(port, "reader") as cursor:
        for sql in (newest, listed):
            cursor.execute(sql)
            assert cursor.fetchall() == [(160,)], sql
        cursor.execute("SELECT count(*) FROM xray.latest_predictions")
        assert cursor.fetchall() == [(160,)]


def test_listening_beyond_loopback_without_authentication_is_refused(tmp_path):
    result = _server("start", tmp_path / "state", "--host", "0.0.0.0", "--lake", str(tmp_path / "lake"), cwd=tmp_path)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("sql-server: error:")]
    assert len(errors) == 1 and "refusing to listen on 0.0.0.0 without authentication" in errors[0]
    assert not (tmp_path / "state" / "server.pid").exists(), "nothing was started"


JDBC_CATALOG = "org.apache.spark.sql.execution.datasources.v2.jdbc.JDBCTableCatalog"


def test_no_client_reads_a_file_a_secret_or_opens_a_catalog(served, tmp_path):
    """Files by path, ``${env:...}``, and settings sent in the session handshake (``;?key=value``)."""
    _, lake, port, _ = served
    key = tmp_path / "hospital.key"
    key.write_text(PLANTED_KEY + "\n")
    key.chmod(0o600)
    before = tree_digest(Path(lake.root))
    with _cursor(port, "reader") as cursor:
        for query in (f"SELECT value FROM text.`{key}`", "SELECT * FROM binaryFile.`/etc`"):
            with pytest.raises(Exception, match=r"refused: .* is not a table or view of the lake") as caught:
                cursor.execute(query)
                cursor.fetchall()
            assert PLANTED_KEY not in str(caught.value)
        for variable in ("env:XRAY_SPARK_PSEUDONYM_KEY", "system:user.home", "hiveconf:hive.server2.thrift.port"):
            cursor.execute(f"SELECT '${{{variable}}}' AS v")
            assert cursor.fetchall() == [(f"${{{variable}}}",)], variable
    derby = f"{lake.root}/tables/predictions/score_date=2099-12-31/run_id=reader/db"
    handshakes = [
        {
            "set:hiveconf:spark.sql.catalog.evil": JDBC_CATALOG,
            "set:hiveconf:spark.sql.catalog.evil.url": f"jdbc:derby:{derby};create=true",
            "set:hiveconf:spark.sql.catalog.evil.driver": "org.apache.derby.jdbc.EmbeddedDriver",
        },
        {"set:hiveconf:spark.sql.variable.substitute": "true"},
        {"set:hivevar:spark.sql.runSQLOnFiles": "true"},
    ]
    for configuration in handshakes:
        with pytest.raises(Exception, match="refused: this session was opened with settings"):  # noqa: SIM117
            with _cursor(port, "reader", configuration) as cursor:
                cursor.execute("SELECT * FROM evil.x" if "evil" in str(configuration) else "SELECT 1")
                cursor.fetchall()
    with _cursor(port, "reader", {"set:hiveconf:spark.sql.session.timeZone": "Europe/Paris"}) as cursor:
        cursor.execute("SELECT current_timezone()")  # a session setting a client may choose
        assert cursor.fetchall() == [("Europe/Paris",)]
    assert tree_digest(Path(lake.root)) == before, "nothing was written into the lake"


def test_one_long_query_neither_blocks_the_others_nor_runs_forever(served):
    """Fair shares between sessions, and the statement timeout (sql_server.statement_timeout_seconds)."""
    _, _, port, _ = served
    outcome: dict[str, object] = {}

    def long_query() -> None:
        started = time.monotonic()
        try:
            with _cursor(port, "hog") as cursor:
                cursor.execute("SELECT count(*) FROM range(0, 100000000000, 1, 4000) WHERE rand() < 2")
                outcome["rows"] = cursor.fetchall()
        except Exception as exc:
            outcome["error"] = str(exc)
        outcome["seconds"] = time.monotonic() - started

    hog = threading.Thread(target=long_query)
    hog.start()
    time.sleep(4)  # the long query holds both cores by now
    started = time.monotonic()
    with _cursor(port, "reader") as cursor:
        cursor.execute("SELECT count(*) FROM xray.studies")
        assert cursor.fetchall() == [(160,)]
    short = time.monotonic() - started
    hog.join(timeout=STATEMENT_TIMEOUT + 60)
    assert not hog.is_alive(), "the long query outlived its timeout by a minute"
    assert short < 10, f"a 0.1 s query waited {short:.1f} s behind another session's query"
    # Cancelled at the timeout (impyla shows only the operation's state for it; beeline says "timed out").
    assert "rows" not in outcome and "error" in outcome, outcome
    assert STATEMENT_TIMEOUT - 1 < outcome["seconds"] < STATEMENT_TIMEOUT + 30, outcome


def test_status_asks_the_server_a_real_question(served):
    """A server whose process lives but whose JVM answers no one is not reported as serving."""
    _, _, _, state = served
    root = state.parent
    answering = _server("status", state, cwd=root)
    assert answering.returncode == 0, answering.stderr[-2000:]
    assert json.loads(answering.stdout) | {"pid": None} == {
        "running": True,
        "answering": True,
        "pid": None,
        "url": json.loads(answering.stdout)["url"],
        "problem": None,
    }
    pid = json.loads((state / "server.pid").read_text())["pid"]
    jvms = [p for p in _group_members(pid) if p != pid]
    assert jvms, "the server's JVM runs in its process group"
    for jvm in jvms:
        os.kill(jvm, signal.SIGSTOP)
    try:
        stuck = _server("status", state, "--timeout", "15", cwd=root)
    finally:
        for jvm in jvms:
            os.kill(jvm, signal.SIGCONT)
    state_now = json.loads(stuck.stdout)
    assert stuck.returncode == 1 and state_now["running"] and not state_now["answering"], stuck.stdout
    assert "no answer to SELECT 1 within 15 s" in state_now["problem"]
    assert _server("status", state, cwd=root).returncode == 0, "answers again once the JVM runs"


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid:  # field 5 of stat: the process group
                members.append(int(entry))
    return members


def test_an_out_of_memory_query_stops_the_server_and_status_says_so(spark, served, tmp_path):
    """After an OutOfMemoryError the JVM exits (it would otherwise answer no one) and status reports it."""
    _, lake, _, _ = served
    port = free_port()
    state = tmp_path / "state"
    common = ("--lake", lake.root, "--port", str(port), "--set", "spark.driver_memory=512m")
    started = _server("start", state, *common, "--set", "sql_server.refresh_seconds=1", cwd=tmp_path)
    pid = None
    try:
        assert started.returncode == 0, started.stderr[-3000:]
        pid = json.loads((state / "server.pid").read_text())["pid"]
        with pytest.raises(Exception), _cursor(port, "hog") as cursor:  # noqa: B017 (the connection drops)
            cursor.execute("SELECT size(collect_list(repeat('x', 1000000))) FROM range(0, 20000, 1, 1)")
            cursor.fetchall()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _group_members(pid):
            time.sleep(0.5)
        assert not _group_members(pid), "the server and its JVM exited"
        gone = _server("status", state, cwd=tmp_path)
        assert gone.returncode == 3, gone.stdout
        assert "exited without being stopped" in json.loads(gone.stdout)["problem"]
    finally:
        _server("stop", state, cwd=tmp_path)
    assert not listening(port)


def test_every_route_to_the_bind_address_goes_through_the_one_check(tmp_path):
    conf = tmp_path / "wide.yaml"
    conf.write_text("sql_server:\n  hive_conf:\n    hive.server2.thrift.bind.host: 0.0.0.0\n")
    routes = {
        "hive_conf": (("--config", str(conf)), None, "is set by 'sql_server.host'"),
        "spark.conf": (("--set", "spark.conf.spark.hadoop.hive.server2.thrift.bind.host=0.0.0.0"), None, "go in sql_"),
        "environment": ((), {"HIVE_SERVER2_THRIFT_BIND_HOST": "0.0.0.0"}, "unset it and use those settings"),
    }
    for route, (args, env, said) in routes.items():
        result = _server("start", tmp_path / "state", "--lake", str(tmp_path / "lake"), *args, cwd=tmp_path, env=env)
        errors = [line for line in result.stderr.splitlines() if line.startswith("sql-server: error:")]
        assert result.returncode == 2 and len(errors) == 1 and said in errors[0], (route, result.stderr[-2000:])
        assert not (tmp_path / "state" / "server.pid").exists(), f"{route}: nothing was started"


def _cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime, clock ticks
    return total / os.sysconf("SC_CLK_TCK")


def test_a_query_whose_client_went_away_is_cancelled(served):
    """A client killed mid-query: its statement stops well before the statement timeout would stop it."""
    _, _, port, state = served
    client = (
        "import sys; from impala.dbapi import connect; c = connect(host='127.0.0.1', port=int(sys.argv[1]), "
        "auth_mechanism='PLAIN', user='gone').cursor(); "
        "c.execute('SELECT count(*) FROM range(0, 100000000000, 1, 4000) WHERE rand() < 2'); print(c.fetchall())"
    )
    proc = subprocess.Popen([sys.executable, "-c", client, str(port)], env=job_env(), stdout=subprocess.DEVNULL)
    pid = json.loads((state / "server.pid").read_text())["pid"]
    members = _group_members(pid)
    try:
        time.sleep(5)
        busy = _cpu_seconds(members)
        time.sleep(2)
        busy = _cpu_seconds(members) - busy
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert busy > 1.0, f"the query was not running ({busy:.2f} CPU s in 2 s)"
    time.sleep(5)  # the server notices the closed connection and cancels the statement's jobs
    idle = _cpu_seconds(members)
    time.sleep(3)
    idle = _cpu_seconds(members) - idle
    assert idle < 1.0, f"the server still worked {idle:.2f} CPU s in 3 s after its client went away"


def test_every_query_the_docs_show_runs_on_a_scored_lake(spark, served, tmp_path):
    """Each SQL statement of the README and docs/ is answered by the server (a table the lake has no rows of yet,
    deliveries or verdicts, stands empty with the catalog's columns); the pandas and DuckDB examples run as shown
    from the lake's parent folder. A renamed column in a page fails here, not in a reader's hands."""
    from xray_spark.lake import catalog

    from .test_docs_commands import PAGES, docs_sql, fenced_blocks

    _, lake, port, _ = served
    queries = docs_sql()
    assert len(queries) >= 8 and {"README.md", "query.md", "deliver.md", "web.md"} <= {p for p, _ in queries}
    missing = [n for n in catalog.TABLE_NAMES if not tables.exists_in_lake(spark, lake, n)]
    tables.register_tables(spark, lake)
    try:
        for name in missing:  # the catalog's empty table, in this session only (the server's catalog is its own)
            (tmp_path / name).mkdir()
            spark.sql(catalog.table(name).ddl(f"file://{tmp_path / name}", tables.qualified(name)))
        for page, sql in queries:
            rows = spark.sql(sql).collect()
            # a table with no rows here, or one patient of the demo's lake (this lake numbers its patients apart)
            empty = any(f"xray.{n}" in sql for n in missing) or "WHERE patient_id =" in sql
            assert rows or empty, f"{page}: no rows from {sql!r}"
            if not empty:
                with _cursor(port, "reader") as cursor:
                    cursor.execute(sql)
                    assert len(cursor.fetchall()) == len(rows), (page, sql)
    finally:
        for name in missing:
            spark.sql(f"DROP TABLE IF EXISTS {tables.qualified(name)}")
    examples = [b for page in PAGES for lang, b in fenced_blocks(page.read_text()) if lang == "python" and "lake/" in b]
    examples = [b for b in examples if "/path/to/" not in b]  # a placeholder path: an example to adapt
    assert len(examples) >= 2
    for block in examples:
        ran = subprocess.run([sys.executable, "-c", block], cwd=Path(lake.root).parent, capture_output=True, text=True)
        assert ran.returncode == 0 and ran.stdout.strip(), (block, ran.stderr[-2000:])
