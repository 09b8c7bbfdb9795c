"""A fresh Python worker's CPU to import TensorFlow: forked from pyspark's own daemon, and from
:mod:`xray_spark.worker_daemon`, which imports it before it forks.

    python bench/job_start.py --out bench/results/job_start_cpu2.json [--repeats 3]

Each repeat starts a local[2] session of each kind and runs one ``mapInPandas`` task on each of its two workers. The
summary is JSON on stdout and in ``--out``; progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PR_SET_CHILD_SUBREAPER = 36


WORKER_CODE = """
import os, sys, time
from xray_spark.config import load_settings
from xray_spark.session import build_session

modules = tuple(m for m in sys.argv[1:] if m)
spark = build_session(load_settings(None, ["spark.master=local[2]"]).spark,
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
    summary = {
        "what": __doc__.split("\n\n")[0],
        "machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}",
        "worker_tensorflow_import": worker_import(args.repeats),
    }
    text = json.dumps(summary, indent=2)
    args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
