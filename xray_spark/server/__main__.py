"""python -m xray_spark.server start|stop|status|run: the read-only SQL server (JDBC/ODBC).

    python -m xray_spark.server start [--config FILE] [--lake DIR] [--host H] [--port P] [--set k=v ...]
    python -m xray_spark.server stop   [--config FILE] [--lake DIR]
    python -m xray_spark.server status [--config FILE] [--lake DIR]

``status`` prints JSON (running, answering, pid, url, problem) and exits 0 only when the
server answers a real query (``SELECT 1``), 1 when its process runs but does not answer, 3
when it does not run. ``start`` prints the JDBC URL (stdout) once the server answers; ``run`` is the server itself
in the foreground (what ``start`` runs in the background). ``--state-dir`` (default: the lake's
own folder under ``<home>/run``, docs/configuration.md#where-files-go) holds its pid, log and work
files, outside the lake: ``stop`` and ``status`` given the ``--config`` and ``--lake`` of ``start``
find the server from any working directory.
"""

from __future__ import annotations

import argparse
import json
import sys

from xray_spark import cli
from xray_spark.sql_client import server_state_dir


def _arg_parser() -> argparse.ArgumentParser:
    parser = cli.base_parser("python -m xray_spark.server", "The read-only Thrift JDBC/ODBC server over xray.*.")
    parser.add_argument("command", choices=["start", "stop", "status", "run"])
    parser.add_argument("--host", help="address to listen on (sql_server.host, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="TCP port (sql_server.port, default 10000)")
    parser.add_argument("--timeout", type=float, default=60.0, help="status: seconds to wait for SELECT 1 (default 60)")
    parser.add_argument("--state-dir", help="pid, log and work files (default: the lake's own folder under <home>/run)")
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
        from xray_spark import daemon as service
        from xray_spark.server import daemon

        settings = cli.resolve_settings(args, _server_overrides(args))
        state_dir = server_state_dir(settings, args.state_dir)
        if args.command == "stop":
            if daemon.stop(state_dir):
                print("sql-server: stopped", file=sys.stderr)
                return 0
            line, code = service.not_found_line("sql-server", "SQL server", state_dir, f"the lake {settings.lake}")
            print(line, file=sys.stderr)
            return code
        if args.command == "status":
            state = daemon.status(state_dir, timeout_s=args.timeout)
            print(json.dumps(state))
            if state["problem"]:
                print(f"sql-server: {state['problem']}", file=sys.stderr)
            if not state["running"]:
                line, _ = service.not_found_line("sql-server", "SQL server", state_dir, f"the lake {settings.lake}")
                print(line, file=sys.stderr)
            return 0 if state["answering"] else 1 if state["running"] else 3
        from xray_spark.server.serve import check_bind, serve

        check_bind(settings.sql_server)  # refused before anything starts
        if args.command == "run":
            service.claim(state_dir)
            return serve(settings, state_dir)
        url = daemon.start(
            state_dir,
            service.run_args(args.conf, args.lake, [*args.overrides, *_server_overrides(args)]),
            address=(settings.sql_server.host, settings.sql_server.port),
        )
        print(url)
        hint = service.command_hint("xray_spark.server", "stop", argv if argv is not None else sys.argv[1:], "start")
        cli.log.info("the SQL server listens at %s (stop it with: %s)", url, hint)
        return 0

    return cli.run_job("sql-server", body, args)


if __name__ == "__main__":
    sys.exit(main())
