"""Run the jobs as a user does (a child process per job), and kill them part-way."""

from __future__ import annotations

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
