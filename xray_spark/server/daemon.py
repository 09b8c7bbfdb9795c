"""The SQL server's start, stop and status, on :mod:`xray_spark.daemon`: ready when it answers ``SELECT 1``.

The server runs as ``python -m xray_spark.server run`` in a session of its own (its JVM in
the same process group), with its log, pid and ready files in the state folder
(the lake's own folder under ``<home>/run`` by default, outside the lake: the server writes nothing into the lake).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence

from xray_spark import daemon
from xray_spark.errors import UsageError


def ready_url(state_dir: str) -> str | None:
    record = daemon.ready(state_dir)
    return str(record["url"]) if record and "url" in record else None


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
    record = daemon.running(state_dir)
    url = ready_url(state_dir) if record else None
    problem = None
    if record is None:
        if daemon.started_here(state_dir):  # started from here and gone without a stop
            tail = [line for line in daemon.log_tail(state_dir, 40).splitlines() if "error" in line.lower()]
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


def start(
    state_dir: str, run_args: Sequence[str], *, timeout_s: float = 180.0, address: tuple[str, int] | None = None
) -> str:
    """Start the server unless one runs from ``state_dir``; returns its JDBC URL once it listens."""
    record = daemon.start(state_dir, "xray_spark.server", run_args, "SQL server", timeout_s=timeout_s, address=address)
    if "url" not in record:
        raise UsageError(f"the SQL server's ready file in {state_dir} names no URL: stop it and start again")
    return str(record["url"])


def stop(state_dir: str, *, timeout_s: float = 30.0) -> bool:
    """Stop the server started from ``state_dir`` (SIGTERM, then SIGKILL); True if one was running."""
    return daemon.stop(state_dir, timeout_s=timeout_s)
