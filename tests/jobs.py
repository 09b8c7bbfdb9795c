"""Run the jobs as a user does (a child process per job), and kill them part-way; or, where the process is not
what a test checks, run a job's ``main`` in the test's own process, on its SparkSession."""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def job_command(job: str, args: Sequence[str]) -> list[str]:
    return [sys.executable, str(ROOT / "jobs" / f"{job}.py"), *map(str, args)]


def submit_command(job: str, args: Sequence[str], submit_args: Sequence[str] = ()) -> list[str]:
    """``spark-submit [submit_args] jobs/<job>.py ...`` as a user types it (the venv's spark-submit)."""
    submit = Path(sys.executable).parent / "spark-submit"
    return [str(submit), "--master", "local[1]", *submit_args, str(ROOT / "jobs" / f"{job}.py"), *map(str, args)]


def run_submitted(
    job: str, args: Sequence[str], *, submit_args: Sequence[str] = (), cwd: Path | None = None, timeout: float = 600
):
    """Run ``jobs/<job>.py`` under spark-submit (which merges the job's stderr into its stdout)."""
    env = job_env({"PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable})
    command = submit_command(job, args, submit_args)
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def job_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), **(extra or {})}


def run_job(
    job: str, args: Sequence[str], *, cwd: Path | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run ``jobs/<job>.py`` to the end; output captured as text."""
    return subprocess.run(
        job_command(job, args), cwd=cwd, env=job_env(), capture_output=True, text=True, timeout=timeout
    )


def run_in_process(job: str, args: Sequence[str]) -> subprocess.CompletedProcess:
    """``xray_spark.jobs.<job>.main(args)`` in this process: its exit status, stdout and stderr (its log lines too).

    The job's session is the test's (``getOrCreate``): no JVM, Python workers or TensorFlow start again, which is
    most of a small job's cost. What the job changes in the process is put back afterwards: signal handlers,
    environment, root logger, and the session's runtime SQL settings. The progress thread is not started (it would
    outlive the job). Use :func:`run_job` where the process itself is checked (its exit, what a second JVM logs,
    whether Spark started at all).
    """
    from unittest import mock

    from pyspark.sql import SparkSession

    main = importlib.import_module(f"xray_spark.jobs.{job}").main
    spark = SparkSession.getActiveSession()
    assert spark is not None, "run_in_process runs a job on the test's session: ask for the spark fixture"
    sql_conf = _runtime_conf(spark)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    environ, root = dict(os.environ), logging.getLogger()
    root_level, root_handlers = root.level, list(root.handlers)
    out, err = io.StringIO(), io.StringIO()
    logged = logging.StreamHandler(err)
    logged.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root.addHandler(logged)
    root.setLevel(logging.INFO)
    try:
        with (
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
            mock.patch("xray_spark.progress.start_progress", return_value=None),
        ):
            code = main([str(a) for a in args])
    finally:
        root.handlers[:], root.level = root_handlers, root_level
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        os.environ.clear()
        os.environ.update(environ)
        _restore_conf(spark, sql_conf)
    return subprocess.CompletedProcess([job, *map(str, args)], code, out.getvalue(), err.getvalue())


def _runtime_conf(spark) -> dict[str, str]:
    return {r["key"]: r["value"] for r in spark.sql("SET").collect()}


def _restore_conf(spark, before: dict[str, str]) -> None:
    for key, value in _runtime_conf(spark).items():
        if not spark.conf.isModifiable(key):
            continue
        if key not in before:
            spark.conf.unset(key)
        elif before[key] != value:
            spark.conf.set(key, before[key])


def checked(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def kill_when(
    job: str, args: Sequence[str], ready: Callable[[], bool], *, timeout: float = 300, what: str = "the moment to kill"
) -> None:
    """Start ``job``, wait until ``ready()``, then SIGKILL its whole process group (driver, JVM, workers).

    Fails when the job ends before that moment: a kill after the job finished would prove nothing.
    """
    proc = subprocess.Popen(
        job_command(job, args),
        env=job_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert proc.poll() is None, f"{job} ended (exit {proc.returncode}) before {what}"
            assert time.monotonic() < deadline, f"{job} did not reach {what} within {timeout:.0f} s"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
