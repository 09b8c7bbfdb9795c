"""Start the server in the background, wait until it answers; stop exactly the process group it started.

The server runs as ``python -m xray_spark.server run`` in a session of its own (its JVM in
the same process group), with its log, pid and ready files in the state folder
(``.sql-server/`` by default, outside the lake: the server writes nothing into the lake).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from xray_spark.errors import UsageError
from xray_spark.locks import process_start_time
from xray_spark.server.serve import READY_FILE

PID_FILE = "server.pid"
LOG_FILE = "server.log"


def _read_pid(state_dir: str) -> dict | None:
    try:
        with open(os.path.join(state_dir, PID_FILE), encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def running(state_dir: str) -> dict | None:
    """The pid record of a server started from ``state_dir`` that is still alive, else None."""
    record = _read_pid(state_dir)
    if record is None:
        return None
    started = process_start_time(int(record["pid"]))
    if started is None or started != record.get("start_time"):  # gone, or the pid was reused
        return None
    return record


def ready_url(state_dir: str) -> str | None:
    try:
        with open(os.path.join(state_dir, READY_FILE), encoding="utf-8") as fh:
            return str(json.load(fh)["url"])
    except (OSError, ValueError, KeyError):
        return None


def answers(url: str, *, timeout_s: float = 60.0) -> str | None:
    """None when the server at ``url`` answers ``SELECT 1`` within ``timeout_s``, else what went wrong.

    Asked the way a client asks: through beeline, the JDBC client that comes with pyspark, so a
    server whose process lives but whose JVM answers no one is not reported as serving.
    """
    import pyspark

    home = os.path.dirname(pyspark.__file__)
    command = [os.path.join(home, "bin", "beeline"), "--silent=true", "--showHeader=false", "--outputformat=csv2"]
    try:
        result = subprocess.run(
            [*command, "-u", url, "-e", "SELECT 1 AS ok"],
            env={**os.environ, "SPARK_HOME": home},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        return f"no answer to SELECT 1 within {timeout_s:.0f} s"
    if result.returncode == 0 and result.stdout.split()[-1:] == ["1"]:
        return None
    lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
    return f"SELECT 1 failed: {lines[0] if lines else f'beeline exited {result.returncode}'}"


def status(state_dir: str, *, timeout_s: float = 60.0) -> dict:
    """What a client would meet: running (the process), answering (a real query), the URL, what went wrong."""
    record = running(state_dir)
    url = ready_url(state_dir) if record else None
    problem = None
    if record is None:
        if _read_pid(state_dir) is not None:  # started from here and gone without a stop
            tail = [line for line in _log_tail(state_dir, 40).splitlines() if "error" in line.lower()]
            problem = "the server exited without being stopped" + (f"; its log: {tail[-1].strip()}" if tail else "")
    elif url is None:
        problem = "starting (not listening yet)"
    else:
        problem = answers(url, timeout_s=timeout_s)
    return {
        "running": record is not None,
        "answering": record is not None and url is not None and problem is None,
        "pid": record and record["pid"],
        "url": url,
        "problem": problem,
    }


def _log_tail(state_dir: str, lines: int = 15) -> str:
    try:
        with open(os.path.join(state_dir, LOG_FILE), encoding="utf-8", errors="replace") as fh:
            return "".join(fh.readlines()[-lines:])
    except OSError:
        return ""


def start(state_dir: str, run_args: Sequence[str], *, timeout_s: float = 180.0) -> str:
    """Start the server unless one runs from ``state_dir``; returns its JDBC URL once it listens."""
    state_dir = os.path.abspath(state_dir)
    record = running(state_dir)
    if record is not None:
        url = ready_url(state_dir)
        if url is not None:
            return url
        raise UsageError(f"a server started from {state_dir} (pid {record['pid']}) is starting or stuck: stop it first")
    os.makedirs(state_dir, exist_ok=True)
    for name in (READY_FILE, PID_FILE):
        if os.path.exists(os.path.join(state_dir, name)):
            os.remove(os.path.join(state_dir, name))
    with open(os.path.join(state_dir, LOG_FILE), "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "xray_spark.server", "run", "--state-dir", state_dir, *run_args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # its own process group: stop takes the JVM with it
        )
    with open(os.path.join(state_dir, PID_FILE), "w", encoding="utf-8") as fh:
        json.dump({"pid": proc.pid, "start_time": process_start_time(proc.pid)}, fh)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        url = ready_url(state_dir)
        if url is not None:
            return url
        if proc.poll() is not None:
            tail = _log_tail(state_dir)
            raise UsageError(f"the SQL server stopped at start (exit {proc.returncode}); its log ends:\n{tail}")
        time.sleep(0.5)
    stop(state_dir)
    raise UsageError(f"the SQL server did not answer within {timeout_s:.0f} s; its log ends:\n{_log_tail(state_dir)}")


def stop(state_dir: str, *, timeout_s: float = 30.0) -> bool:
    """Stop the server started from ``state_dir`` (SIGTERM, then SIGKILL); True if one was running."""
    state_dir = os.path.abspath(state_dir)
    record = running(state_dir)
    if record is not None:
        pid = int(record["pid"])
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and _group_alive(pid):
            time.sleep(0.2)
        if _group_alive(pid):
            _signal_group(pid, signal.SIGKILL)
            time.sleep(0.5)
    for name in (READY_FILE, PID_FILE):
        path = os.path.join(state_dir, name)
        if os.path.exists(path):
            os.remove(path)
    return record is not None


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
