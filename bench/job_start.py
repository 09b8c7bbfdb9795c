"""What a job spends before its work: the driver JVM with and without the class archive, a Python worker's
TensorFlow import with and without the preloading daemon.

    python bench/job_start.py --out bench/results/job_start_cpu2.json [--repeats 3]

* ``sql`` (``SELECT 40 + 2``) and ``prepare`` (40 synthetic films) run as cron runs them, ``python jobs/<job>.py``,
  alternately with ``spark.class_archive=off`` and with an archive written by a first run beforehand; each run's
  CPU is that of its whole process tree (this process is their subreaper, so the JVM that outlives the driver's
  Python is counted too).
* A fresh Python worker's CPU to import TensorFlow, in a session whose workers fork from pyspark's own daemon
  and in one whose workers fork from :mod:`xray_spark.worker_daemon`.

The summary is JSON on stdout and in ``--out``; progress on stderr. Linux only (``PR_SET_CHILD_SUBREAPER``).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PR_SET_CHILD_SUBREAPER = 36


def tree_cpu(command: list[str]) -> tuple[float, float]:
    """(wall s, CPU s of the command and every process it started, reaped here when orphaned)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{command[1]} exited {proc.returncode}: {proc.stderr[-2000:]}")
    while True:  # the orphaned JVM, reparented to this subreaper
        try:
            os.wait()
        except ChildProcessError:
            break
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return time.monotonic() - start, cpu


def job_runs(name: str, args: list[str], work: Path, repeats: int) -> dict:
    """Each run on a lake of its own (``{lake}`` in ``args``), the archive in ``work/jvm``."""
    lakes = (str(work / f"lake-{name}-{k}") for k in range(1000))
    archive = work / "jvm"

    def command() -> list[str]:
        return [sys.executable, str(ROOT / "jobs" / f"{name}.py"), *(a.replace("{lake}", next(lakes)) for a in args)]

    if not list(archive.glob("*.jsa")):
        tree_cpu([*command(), "--set", f"spark.class_archive={archive}"])  # writes the archive
    assert list(archive.glob("*.jsa")), "the first run wrote no archive"
    runs: dict[str, list[float]] = {"off": [], "archive": []}
    for i in range(repeats):
        for kind, value in (("off", "off"), ("archive", str(archive))):
            wall, cpu = tree_cpu([*command(), "--set", f"spark.class_archive={value}"])
            runs[kind].append(round(cpu, 2))
            print(f"{name} {kind} run {i + 1}: {cpu:.1f} CPU s, {wall:.1f} s", file=sys.stderr)
    return {kind: {"cpu_s": values, "median_cpu_s": statistics.median(values)} for kind, values in runs.items()}


WORKER_CODE = """
import os, sys, time
from xray_spark.config import load_settings
from xray_spark.session import build_session

modules = tuple(m for m in sys.argv[1:] if m)
spark = build_session(load_settings(None, ["spark.master=local[2]", "spark.class_archive=off"]).spark,
                      worker_modules=modules)

def imported(batches):
    import pandas as pd
    start = time.process_time()
    from xray_spark.tf_quiet import import_tensorflow
    import_tensorflow()
    spent = time.process_time() - start
    for b in batches:
        yield pd.DataFrame({"pid": [os.getpid()] * len(b), "cpu": [spent] * len(b)})

rows = spark.range(4, numPartitions=2).mapInPandas(imported, "pid long, cpu double").collect()
print(" ".join(str(r.cpu) for r in {r.pid: r for r in rows}.values()))
"""


def worker_import(repeats: int) -> dict:
    out: dict[str, list[float]] = {"pyspark.daemon": [], "xray_spark.worker_daemon": []}
    for i in range(repeats):
        for kind, module in (("pyspark.daemon", ""), ("xray_spark.worker_daemon", "tensorflow")):
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            done = subprocess.run([sys.executable, "-c", WORKER_CODE, module], env=env, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(done.stderr[-2000:])
            values = [float(v) for v in done.stdout.split()]
            out[kind].extend(round(v, 3) for v in values)
            print(f"worker TF import, {kind}, run {i + 1}: {values} CPU s", file=sys.stderr)
    return {kind: {"cpu_s": v, "median_cpu_s": statistics.median(v)} for kind, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    ctypes.CDLL("libc.so.6").prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    sys.path.insert(0, str(ROOT))
    from xray_spark.dev.synthetic import write_archive

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_archive(work / "films", n_images=40, size=96, seed=3)
        sql = ["--lake", "{lake}", "--set", "spark.driver_memory=1g", "SELECT 40 + 2"]
        prepare = ["--lake", "{lake}", "--metadata", str(work / "films" / "Data_Entry_2017.csv")]
        prepare += ["--images", str(work / "films" / "images"), "--set", "image.size=64"]
        summary = {
            "what": __doc__.split("\n\n")[0],
            "machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}",
            "java": subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()[0],
            "sql_job": job_runs("sql", sql, work, args.repeats),
            "worker_tensorflow_import": worker_import(args.repeats),
        }
        summary["prepare_job"] = job_runs("prepare", prepare, work, args.repeats)
    text = json.dumps(summary, indent=2)
    args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
