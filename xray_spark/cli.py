"""What every job shares: common options, configuration, logging and error handling.

Jobs stay thin: ``_arg_parser()`` adds their own options to :func:`base_parser`, ``main()``
calls :func:`run_job` with a function that takes the settings and the parsed arguments.
A :class:`~xray_spark.errors.UsageError` becomes one line on stderr and exit status 2;
no Java stack trace reaches the user for a usage error.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import shutil
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from xray_spark.config import Settings, load_settings
from xray_spark.errors import LockBusy, QuarantineLimitExceeded, UsageError, XraySparkError
from xray_spark.lake import local_path
from xray_spark.lake.store import quiet_petastorm_warnings
from xray_spark.stderr_route import route_stderr

EXIT_USAGE = 2
EXIT_QUARANTINE = 3
EXIT_FAILED = 1
#: Another run holds this run's lock: sysexits' EX_TEMPFAIL, "try again later".
EXIT_BUSY = 75
#: deliver ran, and some films' results were not acknowledged: recorded as failed, retried by the next run; or the
#: night's pull from a DICOMweb archive did not end (its dates are pulled again by the next night).
EXIT_UNDELIVERED = 4
#: monitor ran with monitor.fail_on_alert, and a night raised an alert (what moved is in the summary).
EXIT_DRIFT = 5
#: score ran, and the model's outputs for some films were not finite: those films are in xray.not_scored.
EXIT_NOT_SCORED = 6

#: The signal that stopped the job (SIGINT or SIGTERM), once one arrived.
_stopped_by: list[int] = []

log = logging.getLogger("xray_spark")
#: The settings of the job this process runs (set by :func:`open_lake`), for its summary JSON.


def base_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument(
        "--lake", help="root folder or URL of the lake (overrides the conf's 'lake'; default <home>/lake, see docs)"
    )
    add_config_option(parser)
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one configuration key, e.g. --set image.size=224 (repeatable)",
    )
    parser.add_argument("--summary-json", help="also write the run's summary to this JSON file")
    return parser


class _OldConfigFlag(argparse.Action):
    """``--conf FILE`` after a job's name: the configuration file, as before ``--config``; said on stderr."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(
            f"{parser.prog}: warning: --conf FILE is now --config FILE (--conf is spark-submit's k=v, before the job's "
            "name); --conf FILE is still read in this release",
            file=sys.stderr,
        )
        namespace.conf = values


def add_config_option(parser: argparse.ArgumentParser, *, required: bool = False) -> None:
    """``--config FILE``: the project's YAML configuration (``args.conf``); the older ``--conf FILE`` still read."""
    parser.add_argument(
        "--config",
        dest="conf",
        metavar="FILE",
        required=required,
        help="configuration file (YAML), e.g. conf/local.yaml; defaults built in",
    )
    parser.add_argument("--conf", dest="conf", action=_OldConfigFlag, help=argparse.SUPPRESS)


def add_model_choice(parser: argparse.ArgumentParser) -> None:
    """``--model-version V | --model PATH``: which trained model a job uses (default: the champion)."""
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--model-version",
        help="a version from xray.models (default: the champion, see jobs/promote.py; without one, the newest)",
    )
    which.add_argument("--model", help="a model folder written by jobs/train.py")


def setup_logging() -> None:
    level = os.environ.get("XRAY_SPARK_LOG", "INFO").upper()
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", stream=sys.stderr
    )
    quiet_petastorm_warnings()
    for noisy in ("py4j", "petastorm", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def resolve_settings(args: argparse.Namespace, extra_overrides: Sequence[str] = ()) -> Settings:
    overrides = list(args.overrides) + list(extra_overrides)
    if getattr(args, "lake", None):
        overrides.append(f"lake={json.dumps(args.lake)}")
    return load_settings(args.conf, overrides)


#: What a job's Python workers import before they are forked (:mod:`xray_spark.worker_daemon`): the jobs that
#: open models in their workers preload TensorFlow, the Keras runtime's toolkit.
WORKER_MODULES = {job: ("tensorflow",) for job in ("score", "nightly", "challenge")}


def open_lake(settings: Settings, job: str, *, catalog: bool = False) -> tuple[Any, Any]:
    """Log the resolved configuration, build the session; with ``catalog``, register the lake's tables.

    Only the sql job asks for the catalog here; worklist registers it once when it needs it
    (:func:`xray_spark.lake.tables.ensure_registered`), the others read and write the lake by path
    and register what they write. Registering every table costs a schema job or two each, the
    largest fixed cost of a small nightly run (``bench/results/``).
    """
    from xray_spark.lake import Lake, tables
    from xray_spark.session import build_session

    changed = changed_settings(settings)
    log.info("settings that differ from the defaults: %s (all of them go to --summary-json)", changed)
    lake = Lake.at(settings.lake)  # a lake that cannot be one is refused before Spark starts
    spark = build_session(settings.spark, app_name=f"xray-spark {job}", worker_modules=WORKER_MODULES.get(job, ()))
    install_signal_handlers()  # pyspark's SparkContext replaced ours with its own
    from xray_spark.progress import start_progress

    start_progress(spark, job)  # the job's own lines: every 30 s in a log, every 5 s on a terminal
    from xray_spark.lake.migrate import migrate

    if job != "sql":  # a lake an earlier release wrote gets this release's column names, once; sql writes nothing
        migrate(spark, lake)
    if catalog:
        tables.register_tables(spark, lake)
    return spark, lake


def changed_settings(settings: Settings) -> str:
    """``key=value`` for each setting whose value is not the built-in default, dotted keys."""

    def flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in tree.items():
            if isinstance(value, dict) and value:
                out.update(flat(value, f"{prefix}{key}."))
            else:
                out[prefix + key] = value
        return out

    given, default = flat(settings.to_dict()), flat(load_settings().to_dict())
    changed = [f"{k}={json.dumps(v)}" for k, v in sorted(given.items()) if default.get(k) != v]
    return ", ".join(changed) if changed else "none"


def write_summary_json(path: str | None, summary: dict[str, Any], settings: Settings) -> None:
    """The job's summary, with the job's whole resolved configuration under ``configuration``."""
    if not path:
        return
    if "configuration" not in summary:
        summary = {**summary, "configuration": settings.to_dict()}
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=2, sort_keys=True, default=str)
        fh.write("\n")


def install_signal_handlers() -> None:
    """Ctrl-C (SIGINT) and SIGTERM unwind the job's ``finally`` blocks, then it exits.

    Unwinding releases the run's lock and leaves staging folders for the next run to clean;
    :func:`run_job` then prints one line and exits 128 + the signal number (130 for Ctrl-C).
    The Spark JVM stops with the Python process, and its running jobs with it. (No py4j
    call is made from the handler: it would re-enter the connection it interrupted.)
    """

    def stop(signum: int, _frame: Any) -> None:
        _stopped_by.append(signum)
        # The py4j call this interrupts logs its broken connection with a trace (to the
        # root logger): expected now, and not for the user's screen.
        logging.root.addFilter(lambda record: "py4j" not in record.pathname)
        logging.getLogger("py4j").setLevel(logging.CRITICAL)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)


def _error_exit(name: str, exc: BaseException, args: argparse.Namespace | None) -> int | None:
    """The exit status for ``exc`` after printing its one line, or None for a bug (re-raised)."""
    if _stopped_by or isinstance(exc, KeyboardInterrupt):
        signum = _stopped_by[0] if _stopped_by else signal.SIGINT
        print(
            f"{name}: interrupted by {signal.Signals(signum).name}: stopped, nothing partial published", file=sys.stderr
        )
        return 128 + signum
    if isinstance(exc, UsageError):
        print(f"{name}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if isinstance(exc, QuarantineLimitExceeded):
        print(f"{name}: failed: {exc}", file=sys.stderr)
        return EXIT_QUARANTINE
    if isinstance(exc, LockBusy):
        print(f"{name}: busy: {exc}", file=sys.stderr)
        return EXIT_BUSY
    if isinstance(exc, XraySparkError):
        print(f"{name}: failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if disk_full(exc):
        print(f"{name}: failed: {_disk_full_line(_lake_of(args))}", file=sys.stderr)
        return EXIT_FAILED
    return None


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it, a Java IOException through py4j included) is a full disk."""
    seen = 0
    while exc is not None and seen < 20:
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return True
        if "No space left on device" in str(exc):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _lake_of(args: argparse.Namespace | None) -> str | None:
    """The job's local lake root, from its command line and configuration as it resolved them; None if unknown."""
    if args is None or not hasattr(args, "overrides"):
        return None
    try:
        return local_path(resolve_settings(args).lake)
    except Exception:  # the settings themselves are what failed
        return None


def _disk_full_line(root: str | None) -> str:
    """The one line for a full disk, naming the lake's disk and what is free on it."""
    where = ""
    if root:
        probe = os.path.abspath(root)
        while not os.path.exists(probe):
            probe = os.path.dirname(probe)
        free = shutil.disk_usage(probe).free
        where = f" (the lake {os.path.abspath(root)} is on a disk with {free / 2**20:,.0f} MiB free)"
    return (
        f"a disk is full: No space left on device{where}; nothing partial was published and the store is as it "
        "was: free space (or move the lake) and run again"
    )


def run_job(name: str, body: Callable[[], int], args: argparse.Namespace | None = None) -> int:
    """Run a job's body; map the package's errors and a stopping signal to one line and an exit status.

    ``args`` (the job's parsed command line) lets a full disk's line name the lake's disk.
    """
    route_stderr()  # under spark-submit: logs to its stderr, not into the data on stdout
    setup_logging()
    install_signal_handlers()
    try:
        return body()
    except BaseException as exc:
        code = _error_exit(name, exc, args)
        if code is None:
            raise
        return code
