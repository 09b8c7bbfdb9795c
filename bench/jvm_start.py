"""A job's start with and without the class archive: wall seconds and CPU seconds of one `xray-spark sql` query.

    python bench/jvm_start.py --lake lake [--repeats 4] [--out bench/results/jvm_start_cpu2.json]

Each run is a new ``xray-spark sql`` process, as cron or a user starts a job: the launcher, spark-submit, the
driver JVM, the job's Python. CPU is the process tree's (``RUSAGE_CHILDREN`` after it is waited for), so the
JVM's compiler and class loading threads count. Runs alternate between ``spark.class_archive=false`` and the
archive (:mod:`xray_spark.class_archive`, written first into a cache of the bench's own); the answers must be
equal.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import log, machine  # noqa: E402  (beside this file)

QUERY = "SELECT split, count(*) AS n FROM xray.studies GROUP BY split ORDER BY split"


def _run(lake: str, archive: bool, env: dict) -> tuple[float, float, str]:
    command = [sys.executable, "-m", "xray_spark.launch", "sql", "--lake", lake, "--format", "csv"]
    command += ["--set", f"spark.class_archive={str(archive).lower()}", QUERY]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"sql failed: {done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lake", required=True)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "jvm_start_cpu2.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "XRAY_SPARK_CACHE": cache}
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "xray_spark.launch", "--class-archive"], env=env, check=True, capture_output=True
        )
        write_seconds = time.perf_counter() - started
        size = sum(p.stat().st_size for p in Path(cache).rglob("*.jsa"))
        runs: dict[str, list[tuple[float, float]]] = {"without": [], "with": []}
        answers = set()
        for i in range(args.repeats):
            for name, archive in (("without", False), ("with", True)):
                wall, cpu, out = _run(args.lake, archive, env)
                runs[name].append((wall, cpu))
                answers.add(out)
                log(f"run {i + 1} {name} the archive: {wall:.1f} s, {cpu:.1f} CPU s")
    if len(answers) != 1:
        raise SystemExit(f"the answers differ: {answers}")
    summary = {
        name: {
            "wall_seconds_median": round(statistics.median(w for w, _ in r), 2),
            "cpu_seconds_median": round(statistics.median(c for _, c in r), 2),
            "runs": [[round(w, 2), round(c, 2)] for w, c in r],
        }
        for name, r in runs.items()
    }
    result = {
        "what": "one `xray-spark sql` query as a new process, with and without the driver's class archive",
        "machine": machine(),
        "query": QUERY,
        "archive_write_seconds": round(write_seconds, 1),
        "archive_bytes": size,
        **summary,
        "cpu_saved_per_start_seconds": round(
            summary["without"]["cpu_seconds_median"] - summary["with"]["cpu_seconds_median"], 2
        ),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
