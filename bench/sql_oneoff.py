"""One-off SQL: seconds per `xray-spark sql` query with no server (a JVM each time) and with the SQL server running.

    python bench/sql_oneoff.py --lake lake [--repeats 3] [--out bench/results/sql_oneoff_cpu2.json]

On a scored lake (``make demo``'s ``lake/``), three questions an analyst asks: the worklist's top
ten, a count per split, one patient's films. Each is run as a user runs it, ``xray-spark sql``
as a new process, first with no server for the lake (the Spark job answers), then with
``python -m xray_spark.server start`` serving it (the launcher asks the server). The answers
must be the same rows both ways (CSV compared); then DuckDB over the same Parquet, in process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import log, machine  # noqa: E402  (beside this file)

QUESTIONS = {
    "worklist": "SELECT risk_rank, image_id, ROUND(risk_score, 3) AS risk FROM xray.worklist "
    "ORDER BY dataset, risk_rank LIMIT 10",
    "per_split": "SELECT split, count(*) AS n FROM xray.studies GROUP BY split ORDER BY split",
    "patient": "SELECT image_id, follow_up FROM xray.studies WHERE patient_id = 3 ORDER BY follow_up",
}


def _sql(lake: str, query: str, env: dict) -> tuple[float, str, str]:
    command = [sys.executable, "-m", "xray_spark.launch", "sql", "--lake", lake, "--format", "csv", query]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"sql failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds, done.stdout, done.stderr


def _same(a: str, b: str) -> bool:
    """The same rows, numbers equal to 6 places (a FLOAT column prints as the float it is through Spark's Python
    rows, as its decimal through the server: 0.9860000014305115 and 0.986)."""

    def cells(text: str) -> list[list]:
        out = []
        for line in text.strip().splitlines():
            row = []
            for cell in line.split(","):
                try:
                    row.append(round(float(cell), 6))
                except ValueError:
                    row.append(cell)
            out.append(row)
        return out

    return cells(a) == cells(b)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lake", required=True, help="a scored lake (make demo's lake/)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "sql_oneoff_cpu2.json"))
    args = parser.parse_args()
    lake = os.path.abspath(args.lake)
    home = tempfile.mkdtemp(prefix="sql-oneoff-home-")  # the server's state folder, nothing in the user's home
    env = {**os.environ, "XRAY_SPARK_HOME": home, "PYTHONPATH": str(ROOT)}
    results: dict = {"machine": machine(), "lake": "make demo's lake", "repeats": args.repeats, "questions": {}}
    answers: dict = {}
    for name, query in QUESTIONS.items():  # no server: each query starts Spark
        seconds, rows, said = _sql(lake, query, env)
        assert "no SQL server serves the lake" in said, said[-500:]
        answers[name] = rows
        results["questions"][name] = {"no_server_s": round(seconds, 2)}
        log(f"{name}: {seconds:.1f} s without a server")
    server = [sys.executable, "-m", "xray_spark.server"]
    started = time.perf_counter()
    subprocess.run([*server, "start", "--lake", lake], env=env, check=True, capture_output=True, timeout=600)
    results["server_start_s"] = round(time.perf_counter() - started, 1)
    try:
        for name, query in QUESTIONS.items():
            times = []
            for _ in range(args.repeats):
                seconds, rows, said = _sql(lake, query, env)
                assert "answered by the SQL server" in said, said[-500:]
                assert _same(rows, answers[name]), (name, rows, answers[name])
                times.append(seconds)
            results["questions"][name]["server_s"] = round(statistics.median(times), 2)
            log(f"{name}: {statistics.median(times):.2f} s with the server (median of {args.repeats})")
    finally:
        subprocess.run([*server, "stop", "--lake", lake], env=env, capture_output=True, timeout=300)
    import duckdb

    con = duckdb.connect()
    for name in ("per_split",):
        started = time.perf_counter()
        con.sql(
            f"SELECT split, count(*) AS n FROM read_parquet('{lake}/tables/studies/**/*.parquet', "
            "hive_partitioning = true) GROUP BY split ORDER BY split"
        ).fetchall()
        results["questions"][name]["duckdb_in_process_s"] = round(time.perf_counter() - started, 3)
    no_server = [q["no_server_s"] for q in results["questions"].values()]
    with_server = [q["server_s"] for q in results["questions"].values()]
    results["median_no_server_s"] = round(statistics.median(no_server), 2)
    results["median_server_s"] = round(statistics.median(with_server), 2)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    log(f"median {results['median_no_server_s']} s per query without a server, {results['median_server_s']} s with")
    return 0


if __name__ == "__main__":
    sys.exit(main())
