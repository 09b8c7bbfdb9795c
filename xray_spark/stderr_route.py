"""Keep stdout for data under ``spark-submit``.

``spark-submit`` starts a Python job as a child process whose stderr is merged into its
stdout (Spark's ``PythonRunner`` sets ``redirectErrorStream``), and copies that one stream
to its own stdout. So a log line, a Python warning or TensorFlow's C++ start-up notices
would land in ``spark-submit jobs/sql.py --format csv ... > out.csv``.

:func:`route_stderr` gives file descriptor 2 of the job a pipe of its own; a daemon thread
reads it and writes what arrives to the ``spark-submit`` JVM's own stderr (through the
py4j gateway it already runs for the job), so logs reach the console or the file the user
sent stderr to, and stdout carries only what the job prints as data. Anything written at
the descriptor level (C++ libraries included) takes the same way. Where the gateway
cannot be reached, the bytes go to the original descriptor, as before.

For the same reason a job cannot ask its own descriptors whether the user sits at a
terminal: :func:`terminal` asks about the spark-submit JVM's. :func:`under_spark_submit`
is the one test of whether spark-submit started this process.
"""

from __future__ import annotations

import atexit
import codecs
import contextlib
import os
import sys
import threading
from typing import Any

_route: dict[str, Any] = {}


def under_spark_submit() -> bool:
    """True when this Python process was started by ``spark-submit`` (it owns the master)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def terminal(fd: int) -> bool:
    """Whether the user's descriptor ``fd`` (1 stdout, 2 stderr) is a terminal, under spark-submit too."""
    if under_spark_submit():  # ours are pipes to the spark-submit JVM: ask about its own
        try:
            probe = os.open(f"/proc/{os.getppid()}/fd/{fd}", os.O_WRONLY | os.O_NOCTTY)
        except OSError:
            return False
        try:
            return os.isatty(probe)
        finally:
            os.close(probe)
    return os.isatty(fd)


def _jvm_stderr() -> Any:
    """The spark-submit JVM's ``System.err`` (a PrintStream), through the job's gateway."""
    from pyspark import SparkContext

    SparkContext._ensure_initialized()  # connects to spark-submit's gateway; no SparkContext yet
    return SparkContext._jvm.java.lang.System.err  # type: ignore[union-attr]


def _pump(read_fd: int, fallback_fd: int, sink: Any) -> None:
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    while True:
        chunk = os.read(read_fd, 65536)
        if not chunk:
            break
        text = decoder.decode(chunk)
        try:
            if text:
                sink.print(text)
                sink.flush()
        except Exception:  # the gateway went away: the old way, rather than losing the line
            os.write(fallback_fd, chunk)
    os.close(read_fd)


def route_stderr() -> bool:
    """Send this process's stderr to the spark-submit JVM's stderr; True when routed.

    Does nothing (False) outside spark-submit, or when already routed.
    """
    if not under_spark_submit() or _route:
        return False
    try:
        sink = _jvm_stderr()
    except Exception:
        return False
    sys.stderr.flush()
    original = os.dup(2)
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    thread = threading.Thread(target=_pump, args=(read_fd, original, sink), name="stderr-route", daemon=True)
    thread.start()
    _route.update(thread=thread, original=original)
    atexit.register(_drain)
    return True


def _drain() -> None:
    """At exit: close the pipe's last writer so the thread forwards what is left, then stop."""
    if not _route:
        return
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.flush()
    os.dup2(_route["original"], 2)  # the pipe's write end closes: the thread reads to its end
    _route["thread"].join(timeout=5)
