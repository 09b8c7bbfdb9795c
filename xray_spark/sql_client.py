"""``xray-spark sql`` through the SQL server that serves the lake: an answer in about a second, not a JVM's start.

The launcher asks here first (:func:`sql_through_server`). When a server started for the same
lake (``python -m xray_spark.server start`` with the same ``--config`` and ``--lake``) is running
and answers without a password (``sql_server.authentication: NONE``), the query goes to it
over HiveServer2's Thrift protocol (impyla, a DB-API client) and is printed as the Spark job
prints it; the server refuses what is not a read. Otherwise the launcher runs the Spark job
as before, after one line on stderr that says how to start a server.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Sequence
from urllib.parse import urlparse

from xray_spark import daemon


def add_query_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The sql job's own arguments (the query, --format, --limit), here so that the launcher reads them as the job."""
    parser.add_argument("query", help='the SQL, e.g. "SELECT * FROM xray.worklist LIMIT 20"')
    parser.add_argument("--format", choices=["table", "csv", "json"], default="table")
    parser.add_argument("--limit", type=int, default=1000, help="rows printed at most (default 1000)")
    return parser


def server_state_dir(settings, given: str | None = None) -> str:
    """The SQL server's state folder: ``given`` (``--state-dir``), else the lake's own under ``<home>/run``."""
    return daemon.state_dir_for(given, "sql-server", settings.lake)


def served_address(settings) -> tuple[str, int] | None:
    """(host, port) of the SQL server running for ``settings``' lake, or None."""
    state_dir = server_state_dir(settings)
    record = daemon.ready(state_dir) if daemon.running(state_dir) else None
    if not record or "url" not in record:
        return None
    parsed = urlparse(str(record["url"]).removeprefix("jdbc:"))
    return (parsed.hostname or "127.0.0.1", int(parsed.port or settings.sql_server.port))


def answer(address: tuple[str, int], query: str, *, fmt: str, limit: int, timeout_s: float) -> str:
    """The query's first ``limit`` rows from the server at ``address``, formatted as the sql job formats them."""
    from impala.dbapi import connect

    from xray_spark.readonly import rows_text

    conn = connect(host=address[0], port=address[1], auth_mechanism="PLAIN", user=getpass.getuser(), timeout=timeout_s)
    try:
        cursor = conn.cursor()
        cursor.execute(query)
        names = [d[0].rpartition(".")[2] for d in cursor.description or ()]
        rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchmany(limit)] if names else []
        cursor.close()
    finally:
        conn.close()
    return rows_text(names, rows, fmt)


def sql_through_server(job_args: Sequence[str]) -> int | None:
    """The sql job answered by a running server: its exit status, or None when the Spark job must answer."""
    from xray_spark import cli
    from xray_spark.errors import XraySparkError, first_line

    parser = add_query_arguments(cli.base_parser("sql", "Query xray.* tables and views."))
    args = parser.parse_args(list(job_args))
    try:
        settings = cli.resolve_settings(args)
    except XraySparkError:
        return None  # the job says what is wrong, in its one line
    address = served_address(settings) if settings.sql_server.authentication == "NONE" else None
    if address is None:
        print(
            f"sql: no SQL server serves the lake {settings.lake}, so this query starts Spark (half a minute or "
            "more); `python -m xray_spark.server start` with the same --config and --lake answers the next ones "
            "in about a second",
            file=sys.stderr,
        )
        return None
    try:
        text = answer(address, args.query, fmt=args.format, limit=args.limit, timeout_s=60)
    except Exception as exc:  # the server's refusal or the query's error, as the job would say it
        print(f"sql: error: query failed: {first_line(exc)}", file=sys.stderr)
        return cli.EXIT_USAGE
    print(text)
    print(f"sql: answered by the SQL server on {address[0]}:{address[1]}", file=sys.stderr)
    return 0
