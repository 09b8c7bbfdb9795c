"""A service in the background: started in a session of its own, ready when it says so, stopped by its pid.

The SQL server and the DICOM node run this way. The service is ``python -m <module> run ...``;
its pid (with the process's start time, so a reused pid is never signalled), its log and its
ready file live in a state folder outside the lake. The service writes the ready file
(:func:`write_ready`) once it listens; :func:`start` returns what it wrote.

The state folder is ``--state-dir`` when given, else one named by the service and what it
serves (:func:`state_dir_for`): ``stop`` and ``status`` given the same ``--config``, ``--lake``
(and the node's ``--spool``) as ``start`` find the same service, from any working directory.
When they find none there but one runs from another state folder, they say where.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence

from xray_spark.config import places
from xray_spark.errors import UsageError
from xray_spark.locks import process_start_time

PID_FILE = "server.pid"
LOG_FILE = "server.log"
READY_FILE = "ready.json"


def _read_json(state_dir: str, name: str) -> dict | None:
    try:
        with open(os.path.join(state_dir, name), encoding="utf-8") as fh:
            record = json.load(fh)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def started_here(state_dir: str) -> bool:
    """Whether a service was started from ``state_dir`` and not stopped (it may have died since)."""
    return _read_json(state_dir, PID_FILE) is not None


def running(state_dir: str) -> dict | None:
    """The pid record of a service started from ``state_dir`` that is still alive, else None."""
    record = _read_json(state_dir, PID_FILE)
    if record is None:
        return None
    started = process_start_time(int(record["pid"]))
    if started is None or started != record.get("start_time"):  # gone, or the pid was reused
        return None
    return record


def ready(state_dir: str) -> dict | None:
    """What the service wrote once it listened (None before)."""
    return _read_json(state_dir, READY_FILE)


def claim(state_dir: str) -> None:
    """Called by ``run``: this process's pid record in ``state_dir`` (what ``start`` writes for the process it
    spawns), so ``status`` and ``stop`` find a service that systemd (or a shell) started in the foreground too.
    Only a process that leads its own process group records itself: ``stop`` signals the group."""
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    if os.getpgrp() != os.getpid():
        return
    with open(os.path.join(state_dir, PID_FILE + ".tmp"), "w", encoding="utf-8") as fh:
        json.dump({"pid": os.getpid(), "start_time": process_start_time(os.getpid())}, fh)
    os.replace(os.path.join(state_dir, PID_FILE + ".tmp"), os.path.join(state_dir, PID_FILE))


def write_ready(state_dir: str, record: dict) -> None:
    """Called by the service once it listens: written whole, then renamed, so a reader never sees half."""
    path = os.path.join(state_dir, READY_FILE)
    with open(path + ".tmp", "w", encoding="utf-8") as fh:
        json.dump(record, fh)
    os.replace(path + ".tmp", path)


def run_args(conf: str | None, lake: str | None, overrides: Sequence[str]) -> list[str]:
    """The options ``start`` hands to the background ``run``: the resolved settings' sources, paths made absolute."""
    out = []
    if conf:
        out += ["--config", os.path.abspath(conf)]
    if lake:
        out += ["--lake", lake if "://" in lake else os.path.abspath(lake)]
    for item in overrides:
        out += ["--set", item]
    return out


def state_dir_for(given: str | None, service: str, *serves: str) -> str:
    """``given`` (``--state-dir``) made absolute, else the service's own folder for what it serves
    (:func:`xray_spark.config.places.service_state_dir`)."""
    return os.path.abspath(given) if given else places.service_state_dir(service, *serves)


def running_elsewhere(service: str, state_dir: str) -> list[tuple[str, dict]]:
    """(state folder, ready record) of each ``service`` running from a default state folder other than ``state_dir``."""
    found = []
    for folder in sorted(glob.glob(os.path.join(places.home(), "run", f"{service}-*"))):
        if os.path.abspath(folder) != os.path.abspath(state_dir) and running(folder) is not None:
            found.append((folder, ready(folder) or {}))
    return found


def not_found_line(service: str, what: str, state_dir: str, serves: str) -> tuple[str, int]:
    """(the line, the exit status) when no ``what`` runs from ``state_dir``: 0 when none runs anywhere this
    product keeps services; 3, naming each, when some run from other state folders (started with other settings)."""
    others = running_elsewhere(service, state_dir)
    if not others:
        return f"{service}: not running (no {what} runs for {serves})", 0
    where = "; ".join(
        f"{folder} ({', '.join(f'{k} {v}' for k, v in record.items() if k in ('listening', 'url', 'lake', 'spool'))})"
        for folder, record in others
    )
    return (
        f"{service}: no {what} runs for {serves}, but {len(others)} started with other settings "
        f"{'runs' if len(others) == 1 else 'run'}: {where}; give the --config, --lake (--spool) it was started with, "
        "or its --state-dir",
        3,
    )


def command_hint(module: str, command: str, argv: Sequence[str], this: str) -> str:
    """``python -m module <command> <the options of argv>``: this run's options (its command word ``this``
    replaced), so the line finds the same service."""
    options = list(argv)
    if this in options:
        options.remove(this)
    return shlex.join(["python", "-m", module, command, *options])


def log_tail(state_dir: str, lines: int = 15) -> str:
    try:
        with open(os.path.join(state_dir, LOG_FILE), encoding="utf-8", errors="replace") as fh:
            return "".join(fh.readlines()[-lines:])
    except OSError:
        return ""


CONTROL_LOCK = "control.lock"


@contextlib.contextmanager
def _control(state_dir: str) -> Iterator[None]:
    """One ``start`` or ``stop`` at a time from a state folder: two at once would each spawn a service (one of them
    an orphan no ``stop`` could reach) or race a stop."""
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    with open(os.path.join(state_dir, CONTROL_LOCK), "a", encoding="utf-8") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def check_port_free(host: str, port: int, what: str) -> None:
    """One line, before anything starts, when another process listens on the service's port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UsageError(
                    f"port {port} on {host} is in use by another process: stop it, or give the {what} another port"
                ) from None
            raise UsageError(f"the {what} cannot listen on {host}:{port}: {exc.strerror}") from None


def start(
    state_dir: str,
    module: str,
    run_args: Sequence[str],
    what: str,
    *,
    timeout_s: float = 180.0,
    address: tuple[str, int] | None = None,
) -> dict:
    """Start ``python -m module run`` unless one runs from ``state_dir``; its ready record once it listens.

    Two starts at once from one state folder start one service (the second finds it running); a port
    taken by another process (``address``) is one line, before anything starts.
    """
    state_dir = os.path.abspath(state_dir)
    with _control(state_dir):
        record = running(state_dir)
        if record is not None:
            found = ready(state_dir)
            if found is not None:
                return found
            raise UsageError(
                f"a {what} started from {state_dir} (pid {record['pid']}) is starting or stuck: stop it first"
            )
        if address is not None:
            check_port_free(address[0], int(address[1]), what)
        return _spawn(state_dir, module, run_args, what, timeout_s)


def _spawn(state_dir: str, module: str, run_args: Sequence[str], what: str, timeout_s: float) -> dict:
    for name in (READY_FILE, PID_FILE):
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(state_dir, name))
    with open(os.path.join(state_dir, LOG_FILE), "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", module, "run", "--state-dir", state_dir, *run_args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # its own process group: stop takes its children with it
        )
    with open(os.path.join(state_dir, PID_FILE), "w", encoding="utf-8") as fh:
        json.dump({"pid": proc.pid, "start_time": process_start_time(proc.pid)}, fh)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = ready(state_dir)
        if found is not None:
            return found
        if proc.poll() is not None:
            raise UsageError(
                f"the {what} stopped at start (exit {proc.returncode}); its log ends:\n{log_tail(state_dir)}"
            )
        time.sleep(0.2)
    _stop(state_dir, 30.0)
    raise UsageError(f"the {what} was not ready within {timeout_s:.0f} s; its log ends:\n{log_tail(state_dir)}")


def stop(state_dir: str, *, timeout_s: float = 30.0) -> bool:
    """Stop the service started from ``state_dir`` (SIGTERM, then SIGKILL after ``timeout_s``); True if one ran."""
    state_dir = os.path.abspath(state_dir)
    if not os.path.isdir(state_dir):
        return False
    with _control(state_dir):
        return _stop(state_dir, timeout_s)


def _stop(state_dir: str, timeout_s: float) -> bool:
    record = running(state_dir)
    if record is not None:
        pid = int(record["pid"])
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and _group_alive(pid):
            time.sleep(0.1)
        if _group_alive(pid):
            _signal_group(pid, signal.SIGKILL)
            time.sleep(0.5)
    for name in (READY_FILE, PID_FILE):
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(state_dir, name))
    return record is not None


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
