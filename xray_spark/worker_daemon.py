"""Spark's Python worker daemon, with the workers' heavy modules imported once, before it forks.

Spark starts one daemon per executor (in local mode, per driver) and forks a Python worker
from it for each task slot; a worker idle for a minute is stopped, and the next task forks a
fresh one. A fresh fork of pyspark's own daemon imports TensorFlow again the first time it
opens a model, about 2.5 CPU seconds each time on a 2-core VM (0.002 from this daemon:
``bench/results/job_start_cpu2.json``). This daemon imports the modules named in
:data:`PRELOAD_ENV` first and then runs pyspark's: each fork inherits them.

* TensorFlow is imported only: no device is listed before the fork, since CUDA does not
  survive one; each worker lists the GPUs itself when it first opens a model.
* A module that fails to import is named on stderr and skipped: the daemon still starts, and
  the worker that needs the module fails with the import's own error.
* The daemon's stdout is how it tells Spark its port: nothing is printed there.

:func:`xray_spark.session.build_session` names this module as ``spark.python.daemon.module``
when a job asks for preloaded modules (the jobs that open models in their workers do).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable

#: The variable (set through ``spark.executorEnv``) that lists the modules, comma-separated.
PRELOAD_ENV = "XRAY_SPARK_WORKER_PRELOAD"
#: The modules every worker imports to exchange Arrow batches with the JVM.
ARROW_MODULES = ("numpy", "pandas", "pyarrow")


def preload(names: Iterable[str]) -> list[str]:
    """Import each module; the names of those that failed (each said on stderr)."""
    failed = []
    for name in names:
        try:
            if name == "tensorflow":
                from xray_spark.tf_quiet import import_tensorflow

                import_tensorflow(list_gpus=False)
            else:
                importlib.import_module(name)
        except Exception as exc:  # a module that cannot load must not stop the daemon
            failed.append(name)
            print(f"xray-spark worker daemon: {name} not preloaded: {type(exc).__name__}: {exc}", file=sys.stderr)
    return failed


def main() -> None:
    names = [n.strip() for n in os.environ.get(PRELOAD_ENV, "").split(",") if n.strip()]
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)  # whatever an import writes to descriptor 1 goes to stderr, not into Spark's port line
    try:
        preload(names)
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
    from pyspark.daemon import manager

    manager()


if __name__ == "__main__":
    main()
