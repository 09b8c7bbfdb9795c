"""The server process: the lake's catalog, read-only client sessions, Spark's Thrift server, the watcher."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import threading
import time
from typing import Any

from xray_spark import daemon
from xray_spark.config import Settings, SqlServerSettings
from xray_spark.errors import UsageError, first_line
from xray_spark.net import is_loopback, listening, listening_addresses

log = logging.getLogger(__name__)

#: Environment variables HiveServer2 reads before its settings (they would move the port or address unseen).
HIVE_ENVIRONMENT = ("HIVE_SERVER2_THRIFT_BIND_HOST", "HIVE_SERVER2_THRIFT_PORT", "HIVE_SERVER2_TRANSPORT_MODE")


def _refuse_open(host: str) -> UsageError:
    return UsageError(
        f"refusing to listen on {host} without authentication: anyone who reaches that address could "
        "read every prediction; set sql_server.authentication=LDAP or KERBEROS with its sql_server.hive_conf "
        "settings (docs/query.md, the SQL server), or keep sql_server.host=127.0.0.1"
    )


def check_bind(server: SqlServerSettings) -> None:
    """Anything but a loopback address needs authentication: no open, unauthenticated SQL port.

    The one check of every route to the address: ``sql_server.host`` (the settings refuse
    ``hive_conf`` and ``spark.conf`` keys that would set it another way) and the environment
    variables HiveServer2 reads first. :func:`check_listening` checks what the socket did.
    """
    for name in HIVE_ENVIRONMENT:
        if os.environ.get(name):
            raise UsageError(
                f"the environment sets {name}, which HiveServer2 obeys before sql_server.host and sql_server.port: "
                "unset it and use those settings"
            )
    if not is_loopback(server.host) and server.authentication == "NONE":
        raise _refuse_open(server.host)


def check_listening(server: SqlServerSettings) -> None:
    """After the start: refuse (the caller stops the server) if it listens beyond loopback without authentication."""
    if server.authentication != "NONE":
        return
    wide = sorted(a for a in listening_addresses(server.port) if not is_loopback(a))
    if wide:
        raise _refuse_open(wide[0])


#: Spark's fair scheduler inside one pool: each client's statements get a share of the cores.
FAIR_POOLS = """<?xml version="1.0"?>
<allocations>
  <pool name="default"><schedulingMode>FAIR</schedulingMode><weight>1</weight><minShare>0</minShare></pool>
</allocations>
"""


def server_spark_conf(server: SqlServerSettings, state_dir: str) -> dict[str, str]:
    """Spark settings of the server's JVM: client sessions locked down, fair shares, time and size limits."""
    from xray_spark.readonly import SQL_SESSION_CONF

    pools = os.path.join(state_dir, "fair-scheduler.xml")
    with open(pools, "w", encoding="utf-8") as fh:
        fh.write(FAIR_POOLS)
    return {
        **SQL_SESSION_CONF,
        "spark.scheduler.mode": "FAIR",
        "spark.scheduler.allocation.file": pools,
        "spark.sql.thriftServer.queryTimeout": f"{server.statement_timeout_seconds}s",
        "spark.sql.thriftServer.interruptOnCancel": "true",
        "spark.sql.thriftServer.incrementalCollect": "true",
        "spark.driver.maxResultSize": f"{server.max_result_mb}m",
    }


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


def jvm_alive(spark: Any) -> bool:
    """Whether the JVM behind ``spark`` still runs (a JVM that exited on OutOfMemoryError does not)."""
    proc = getattr(spark.sparkContext._gateway, "proc", None)
    return proc is None or proc.poll() is None


def serve(settings: Settings, state_dir: str) -> int:
    """Run the server until SIGTERM or SIGINT; writes ``ready.json`` once clients can connect."""
    from xray_spark.lake import Lake, tables
    from xray_spark.server.guard import guard_new_sessions
    from xray_spark.server.watch import LakeWatcher, cache_views
    from xray_spark.session import build_session

    server = settings.sql_server
    check_bind(server)
    os.makedirs(state_dir, exist_ok=True)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    conf = {**settings.spark.conf, **server_spark_conf(server, state_dir)}
    # A JVM out of memory exits (and the server with it, reported by status) instead of answering no one.
    spark = build_session(
        dataclasses.replace(settings.spark, conf=conf),
        app_name="xray-spark sql-server",
        jvm_options="-XX:+ExitOnOutOfMemoryError",
    )
    lake = Lake.at(settings.lake)
    registered = tables.register_tables(spark, lake)
    cache_views(spark)
    guard_new_sessions(spark, hive_properties(server, state_dir))
    thrift = start_thrift(spark, server, state_dir)
    try:
        if not wait_listening(server.host, server.port, 60):
            raise UsageError(f"the Thrift server did not listen on {server.host}:{server.port} within 60 s")
        check_listening(server)
        url = f"jdbc:hive2://{server.host}:{server.port}"
        daemon.write_ready(state_dir, {"url": url, "pid": os.getpid(), "lake": lake.root, "tables": registered})
        log.info("listening at %s: %d tables and views of %s, read-only", url, len(registered), lake.root)
        watcher = LakeWatcher(spark, lake) if lake.is_local else None
        while not stop.wait(server.refresh_seconds):
            if not jvm_alive(spark):
                raise UsageError("the server's JVM has gone (out of memory or killed; its log says which): stopping")
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
