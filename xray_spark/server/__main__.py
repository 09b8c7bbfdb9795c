"""python -m xray_spark.server start|stop|status|run: the read-only SQL server (JDBC/ODBC).

    python -m xray_spark.server start [--conf FILE] [--lake DIR] [--host H] [--port P] [--set k=v ...]
    python -m xray_spark.server stop
    python -m xray_spark.server status

``status`` prints JSON (running, answering, pid, url, problem) and exits 0 only when the
server answers a real query (``SELECT 1``), 1 when its process runs but does not answer, 3
when it does not run. ``start`` prints the JDBC URL (stdout) once the server answers; ``run`` is the server itself
in the foreground (what ``start`` runs in the background). ``--state-dir`` (default
``.sql-server``) holds its pid, log and work files, outside the lake.
"""

from __future__ import annotations

import argparse
import json
import sys

from xray_spark import cli


def _arg_parser() -> argparse.ArgumentParser:
    parser = cli.base_parser("python -m xray_spark.server", "The read-only Thrift JDBC/ODBC server over xray.*.")
    parser.add_argument("command", choices=["start", "stop", "status", "run"])
    parser.add_argument("--host", help="address to listen on (sql_server.host, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="TCP port (sql_server.port, default 10000)")
    parser.add_argument("--timeout", type=float, default=60.0, help="status: seconds to wait for SELECT 1 (default 60)")
    parser.add_argument("--state-dir", default=".sql-server", help="pid, log and work files (default .sql-server)")
    return parser


def _server_overrides(args: argparse.Namespace) -> list[str]:
    out = []
    if args.host:
        out.append(f"sql_server.host={args.host}")
    if args.port:
        out.append(f"sql_server.port={args.port}")
    return out


def main(argv: list[str] | None = None) -> int:
    args = _arg_parser().parse_args(argv)

    def body() -> int:
        from xray_spark.server import daemon

        if args.command == "stop":
            was = daemon.stop(args.state_dir)
            print("sql-server: stopped" if was else "sql-server: not running", file=sys.stderr)
            return 0
        if args.command == "status":
            state = daemon.status(args.state_dir, timeout_s=args.timeout)
            print(json.dumps(state))
            if state["problem"]:
                print(f"sql-server: {state['problem']}", file=sys.stderr)
            return 0 if state["answering"] else 1 if state["running"] else 3
        settings = cli.resolve_settings(args, _server_overrides(args))
        from xray_spark.server.serve import check_bind, serve

        check_bind(settings.sql_server)  # refused before anything starts
        if args.command == "run":
            return serve(settings, args.state_dir)
        from xray_spark.daemon import run_args

        url = daemon.start(
            args.state_dir,
            run_args(args.conf, args.lake, [*args.overrides, *_server_overrides(args)]),
            address=(settings.sql_server.host, settings.sql_server.port),
        )
        print(url)
        cli.log.info("the SQL server listens at %s (stop it with: python -m xray_spark.server stop)", url)
        return 0

    return cli.run_job("sql-server", body, args)


if __name__ == "__main__":
    sys.exit(main())
