"""python -m xray_spark.node start|stop|status|run: the DICOM storage node a PACS sends studies to.

    python -m xray_spark.node start [--lake L] [--config F] [--set k=v ...] [--spool DIR] [--host H]
        [--port P] [--ae-title T] [--allow AE_TITLE@HOST ...]
    python -m xray_spark.node stop   [--lake L] [--config F] [--spool DIR]
    python -m xray_spark.node status [--lake L] [--config F] [--spool DIR]

Each flag overrides its ``dicom_node`` setting. ``start`` runs the node in the background and
prints where it listens (``AE@host:port``, stdout) once it does; ``run`` is the node in the
foreground. ``status`` prints JSON (running, listening, pid, the spool, how many received
instances no night has ingested yet, how many corrections wait for a person) and exits 0 when
the node listens, 1 when its process runs but does not listen, 3 when it does not run.
``stop`` lets the associations in flight finish (``dicom_node.stop_timeout_seconds``).
Its pid, log and ready files are in ``--state-dir``, by default a folder of its spool's own
under ``<home>/run`` (docs/configuration.md#where-files-go): ``stop`` and ``status`` given
the settings ``start`` was given find it from any working directory.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import signal
import sys
import threading

from xray_spark import cli, daemon
from xray_spark.errors import UsageError
from xray_spark.lake import local_path
from xray_spark.net import listening_addresses
from xray_spark.spool import open_spool

WHAT = "DICOM node"


def _arg_parser() -> argparse.ArgumentParser:
    parser = cli.base_parser("python -m xray_spark.node", "The DICOM storage node (C-ECHO, C-STORE) into the spool.")
    parser.add_argument("command", choices=["start", "stop", "status", "run"])
    parser.add_argument("--spool", help="folder of received files, outside the lake (dicom_node.spool)")
    parser.add_argument("--host", help="address to listen on (dicom_node.host, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="TCP port (dicom_node.port, default 11112)")
    parser.add_argument("--ae-title", help="the node's AE title (dicom_node.ae_title, default XRAY_SPARK)")
    parser.add_argument(
        "--allow",
        action="append",
        metavar="AE_TITLE@HOST",
        help="a sender allowed (repeat the flag for more; replaces dicom_node.allow)",
    )
    parser.add_argument(
        "--state-dir", help="pid, log and ready files (default: the spool's own folder under <home>/run)"
    )
    return parser


def _node_overrides(args: argparse.Namespace) -> list[str]:
    out = []
    for flag, key in (("spool", "spool"), ("host", "host"), ("port", "port"), ("ae_title", "ae_title")):
        value = getattr(args, flag)
        if value is not None:
            out.append(f"dicom_node.{key}={json.dumps(os.path.abspath(value) if flag == 'spool' else value)}")
    if args.allow is not None:
        out.append(f"dicom_node.allow={json.dumps(args.allow)}")
    return out


def _spool(settings):
    return open_spool(settings.dicom_node.spool, local_path(settings.lake))


def _run(settings, state_dir: str) -> int:
    from xray_spark.node.scp import serve

    node = settings.dicom_node
    spool = _spool(settings)
    lock = open(os.path.join(spool.root, ".lock"), "w")  # noqa: SIM115 - held for the node's life
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise UsageError(f"another DICOM node uses the spool {spool.root}: one node per spool") from None
    left = spool.clear_receiving()
    if left:
        cli.log.info("removed %d half-received files of an earlier node (never acknowledged)", left)
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    where = f"{node.ae_title}@{node.host}:{node.port}"

    def ready() -> None:
        record = {"listening": where, "host": node.host, "port": node.port, "spool": spool.root, "pid": os.getpid()}
        daemon.write_ready(state_dir, record)
        cli.log.info("listening as %s; received files go to %s", where, spool.root)

    from xray_spark.audit import trail

    totals = serve(
        node, spool, stopping, ready, max_instance_bytes=settings.image.max_file_bytes, audit=trail(settings)
    )
    cli.log.info("stopped: %s", ", ".join(f"{k} {v}" for k, v in totals.items()))
    return 0


def _state_dir(args: argparse.Namespace, settings) -> str:
    return daemon.state_dir_for(args.state_dir, "dicom-node", settings.dicom_node.spool)


def _status(settings, state_dir: str) -> tuple[dict, int]:
    record = daemon.running(state_dir)
    found = daemon.ready(state_dir) if record else None
    port = found["port"] if found else settings.dicom_node.port
    listens = bool(found) and bool(listening_addresses(int(port)))
    spool = found["spool"] if found else os.path.abspath(settings.dicom_node.spool)
    opened = open_spool(spool, None, create=False) if os.path.isdir(spool) else None
    pending = len(opened.pending()) if opened else 0
    corrections = len(opened.correction_files()) if opened else 0
    state = {
        "running": record is not None,
        "listening": found["listening"] if listens else None,
        "pid": record and record["pid"],
        "spool": spool,
        "not_ingested": pending,
        "corrections": corrections,  # re-sent instances with other bytes, kept for a person (spool/corrections/)
    }
    return state, 0 if listens else 1 if record else 3


def main(argv: list[str] | None = None) -> int:
    args = _arg_parser().parse_args(argv)

    def body() -> int:
        settings = cli.resolve_settings(args, _node_overrides(args))
        state_dir = _state_dir(args, settings)
        if args.command == "stop":
            if daemon.stop(state_dir, timeout_s=settings.dicom_node.stop_timeout_seconds + 10):
                print("dicom-node: stopped", file=sys.stderr)
                return 0
            line, code = daemon.not_found_line("dicom-node", WHAT, state_dir, f"the spool {settings.dicom_node.spool}")
            print(line, file=sys.stderr)
            return code
        if args.command == "status":
            state, code = _status(settings, state_dir)
            print(json.dumps(state))
            if code == 3:
                line, _ = daemon.not_found_line("dicom-node", WHAT, state_dir, f"the spool {state['spool']}")
                print(line, file=sys.stderr)
            return code
        from xray_spark.node.access import check_bind

        check_bind(settings.dicom_node)  # refused before anything starts
        _spool(settings)  # a spool inside the lake is refused here, in one line
        if args.command == "run":
            daemon.claim(state_dir)
            return _run(settings, state_dir)
        record = daemon.start(
            state_dir,
            "xray_spark.node",
            daemon.run_args(args.conf, args.lake, [*args.overrides, *_node_overrides(args)]),
            WHAT,
            timeout_s=60,
            address=(settings.dicom_node.host, settings.dicom_node.port),
        )
        print(record["listening"])
        hint = daemon.command_hint("xray_spark.node", "stop", argv if argv is not None else sys.argv[1:], "start")
        cli.log.info("the DICOM node listens as %s (stop it with: %s)", record["listening"], hint)
        return 0

    return cli.run_job("dicom-node", body, args)


if __name__ == "__main__":
    sys.exit(main())
