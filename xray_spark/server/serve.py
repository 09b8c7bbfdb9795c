"""The server process: the lake's catalog, read-only client sessions, Spark's Thrift server, the watcher."""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import signal
import socket
import threading
import time
from typing import Any

from xray_spark.config import Settings, SqlServerSettings
from xray_spark.errors import UsageError, first_line

log = logging.getLogger(__name__)

READY_FILE = "ready.json"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(server: SqlServerSettings) -> None:
    """Anything but a loopback address needs authentication: no open, unauthenticated SQL port."""
    if not is_loopback(server.host) and server.authentication == "NONE":
        raise UsageError(
            f"refusing to listen on {server.host} without authentication: anyone who reaches that address could "
            "read every prediction; set sql_server.authentication=LDAP or KERBEROS with its sql_server.hive_conf "
            "settings (README: Query the predictions), or keep sql_server.host=127.0.0.1"
        )


def hive_properties(server: SqlServerSettings, state_dir: str) -> dict[str, str]:
    """The HiveServer2 settings of the Thrift server: address, authentication, and its files under ``state_dir``."""
    return {
        "hive.server2.thrift.bind.host": server.host,
        "hive.server2.thrift.port": str(server.port),
        "hive.server2.transport.mode": "binary",
        "hive.server2.authentication": server.authentication,
        "hive.exec.scratchdir": os.path.join(state_dir, "scratch"),
        "hive.exec.local.scratchdir": os.path.join(state_dir, "local-scratch"),
        "hive.server2.logging.operation.log.location": os.path.join(state_dir, "operation-logs"),
        "derby.stream.error.file": os.path.join(state_dir, "derby.log"),
        **server.hive_conf,
    }


def start_thrift(spark: Any, server: SqlServerSettings, state_dir: str) -> Any:
    """Spark's ``HiveThriftServer2`` on this session (the properties go in as JVM system properties)."""
    jvm = spark.sparkContext._jvm
    for name in ("scratch", "local-scratch", "operation-logs"):
        os.makedirs(os.path.join(state_dir, name), exist_ok=True)
    for key, value in hive_properties(server, state_dir).items():
        jvm.java.lang.System.setProperty(key, value)
    thrift = jvm.org.apache.spark.sql.hive.thriftserver.HiveThriftServer2
    return thrift.startWithContext(spark._jsparkSession.sqlContext())


def listening(port: int) -> bool | None:
    """Whether a socket of this host listens on TCP ``port`` (from ``/proc/net/tcp*``; None without them).

    Looked up rather than probed: a connection that closes before its handshake makes the
    Thrift server log an error with a stack trace.
    """
    found = None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as fh:
                rows = fh.read().splitlines()[1:]
        except OSError:
            continue
        found = bool(found)
        for row in rows:
            fields = row.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                return True
    return found


def wait_listening(host: str, port: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = listening(port)
        if state is None:  # no /proc: connect (the server logs that one probe)
            try:
                with socket.create_connection((host, port), timeout=1):
                    return True
            except OSError:
                pass
        elif state:
            return True
        time.sleep(0.2)
    return False


def serve(settings: Settings, state_dir: str) -> int:
    """Run the server until SIGTERM or SIGINT; writes ``ready.json`` once clients can connect."""
    from xray_spark import tables
    from xray_spark.lake import Lake
    from xray_spark.server.guard import guard_new_sessions
    from xray_spark.server.watch import LakeWatcher
    from xray_spark.session import build_session

    server = settings.sql_server
    check_bind(server)
    os.makedirs(state_dir, exist_ok=True)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    spark = build_session(settings.spark, app_name="xray-spark sql-server")
    lake = Lake.at(settings.lake)
    registered = tables.register_tables(spark, lake)
    guard_new_sessions(spark)
    thrift = start_thrift(spark, server, state_dir)
    try:
        if not wait_listening(server.host, server.port, 60):
            raise UsageError(f"the Thrift server did not listen on {server.host}:{server.port} within 60 s")
        url = f"jdbc:hive2://{server.host}:{server.port}"
        with open(os.path.join(state_dir, READY_FILE), "w", encoding="utf-8") as fh:
            json.dump({"url": url, "pid": os.getpid(), "lake": lake.root, "tables": registered}, fh)
        log.info("listening at %s: %d tables and views of %s, read-only", url, len(registered), lake.root)
        watcher = LakeWatcher(spark, lake) if lake.is_local else None
        while not stop.wait(server.refresh_seconds):
            if watcher is None:
                continue
            try:
                watcher.refresh()
            except Exception as exc:  # a folder moved under the listing: the next look tries again
                log.warning("refresh failed, tried again in %s s: %s", server.refresh_seconds, first_line(exc))
    finally:
        log.info("stopping")
        thrift.stop()
        spark.stop()
    return 0
