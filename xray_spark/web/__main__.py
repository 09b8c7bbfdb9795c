"""python -m xray_spark.web start|stop|status|run|add-user: the worklist web app readers sign in to.

    python -m xray_spark.web start [--lake L] [--config F] [--set k=v ...] [--host H] [--port P]
    python -m xray_spark.web stop   [--lake L] [--config F]
    python -m xray_spark.web status [--lake L] [--config F]
    python -m xray_spark.web add-user NAME        (the password is read from stdin)

Each flag overrides its ``web`` setting. ``start`` runs the app in the background and prints its
URL (stdout) once it listens; ``run`` is the app in the foreground. ``status`` prints JSON and
exits 0 when the app listens, 1 when its process runs but does not listen, 3 when it does not
run. ``add-user`` adds a reader or changes their password (and ends their sessions).
``--state-dir`` (default: the lake's own folder under ``<home>/run``,
docs/configuration.md#where-files-go) holds the pid, log and ready files, outside the lake:
``stop`` and ``status`` given the ``--config`` and ``--lake`` of ``start`` find the app.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import signal
import sys
import threading

from xray_spark import cli, daemon
from xray_spark.errors import UsageError
from xray_spark.net import listening_addresses

WHAT = "worklist web app"


def _arg_parser() -> argparse.ArgumentParser:
    parser = cli.base_parser("python -m xray_spark.web", "The worklist web app: readers sign in and give verdicts.")
    parser.add_argument("command", choices=["start", "stop", "status", "run", "add-user"])
    parser.add_argument("name", nargs="?", help="add-user: the reader's name")
    parser.add_argument("--host", help="address to listen on (web.host, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="TCP port (web.port, default 8470)")
    parser.add_argument(
        "--state-dir", help="pid, log and ready files (default: the lake's own folder under <home>/run)"
    )
    return parser


def _overrides(args: argparse.Namespace) -> list[str]:
    return [f"web.{k}={json.dumps(getattr(args, k))}" for k in ("host", "port") if getattr(args, k) is not None]


def _url(settings) -> str:
    scheme = "https" if settings.web.tls_cert else "http"
    return f"{scheme}://{settings.web.host}:{settings.web.port}/"


def _run(settings, state_dir: str) -> int:
    from xray_spark.web.serve import serve

    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())

    def ready() -> None:
        daemon.write_ready(state_dir, {"url": _url(settings), "port": settings.web.port, "pid": os.getpid()})
        cli.log.info("the worklist web app listens at %s", _url(settings))

    serve(settings, stopping, ready)
    cli.log.info("stopped")
    return 0


def _add_user(settings, name: str | None) -> int:
    from xray_spark.web.accounts import Accounts
    from xray_spark.web.serve import accounts_path

    if not name:
        raise UsageError("add-user needs the reader's name: python -m xray_spark.web add-user NAME")
    password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
    accounts = Accounts(accounts_path(settings))
    new = accounts.add_user(name, password)
    cli.log.info("%s %s in %s", "added" if new else "changed the password of", name, accounts.path)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _arg_parser().parse_args(argv)

    def body() -> int:
        settings = cli.resolve_settings(args, _overrides(args))
        state_dir = daemon.state_dir_for(args.state_dir, "web", settings.lake)
        if args.command == "stop":
            if daemon.stop(state_dir, timeout_s=40):
                print("web: stopped", file=sys.stderr)
                return 0
            line, code = daemon.not_found_line("web", WHAT, state_dir, f"the lake {settings.lake}")
            print(line, file=sys.stderr)
            return code
        if args.command == "status":
            record = daemon.running(state_dir)
            found = daemon.ready(state_dir) if record else None
            listens = bool(found) and bool(listening_addresses(int(found["port"])))
            print(json.dumps({"running": record is not None, "url": found["url"] if listens else None}))
            if record is None:
                print(daemon.not_found_line("web", WHAT, state_dir, f"the lake {settings.lake}")[0], file=sys.stderr)
            return 0 if listens else 1 if record else 3
        if args.command == "add-user":
            return _add_user(settings, args.name)
        from xray_spark.web.serve import accounts_path, check_bind, verdicts_path
        from xray_spark.web.verdicts import VerdictStore

        check_bind(settings)  # refused before anything starts
        accounts_path(settings)  # accounts inside the lake are refused in one line
        VerdictStore(verdicts_path(settings))  # a damaged verdicts file is refused in one line, with its repair
        if args.command == "run":
            daemon.claim(state_dir)
            return _run(settings, state_dir)
        record = daemon.start(
            state_dir,
            "xray_spark.web",
            daemon.run_args(args.conf, args.lake, [*args.overrides, *_overrides(args)]),
            WHAT,
            timeout_s=60,
            address=(settings.web.host, settings.web.port),
        )
        print(record["url"])
        hint = daemon.command_hint("xray_spark.web", "stop", argv if argv is not None else sys.argv[1:], "start")
        cli.log.info("the worklist web app is at %s (stop it with: %s)", record["url"], hint)
        return 0

    return cli.run_job("web", body, args)


if __name__ == "__main__":
    sys.exit(main())
