"""One writer at a time: a lock file per lake and job kind.

Two runs that would conflict (two ``prepare`` runs of one dataset, two ``score`` runs of one
model version) take the same lock, ``lake/locks/<name>.lock``. The file is created with
``O_CREAT | O_EXCL``, which is atomic on a local disk and on a shared filesystem that
several machines mount (NFS v3 and later, CephFS, Lustre, GPFS), and it records its owner:
host, pid, the process's start time, the job and when it took the lock.

* The owner removes the lock on every exit path (``finally``; the jobs turn SIGTERM and
  Ctrl-C into exceptions, so those paths run it too).
* A lock whose owner is provably dead is taken over: the owner ran on this host and its
  pid no longer runs, or runs a process that started at another time (the pid was
  reused). An owner on another host cannot be proved dead from here: the lock waits, and
  the message names the host and pid so an operator can check and remove the file.
* A second run waits up to ``locks.wait_seconds`` (default 0), then refuses with one line
  (:class:`~xray_spark.errors.LockBusy`, exit status 75, "try again later").

Takeovers are serialised by a second file, ``<name>.lock.break``, so two runs that find
the same dead owner cannot both remove the lock (the second would remove the first's new
lock). A lake on an object store (``s3a://``) has no atomic create: there the jobs log a
warning and run unlocked.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

from xray_spark.errors import LockBusy
from xray_spark.lake import Lake

log = logging.getLogger(__name__)

LOCK_DIR = "locks"
#: A lock or break file this old that holds no owner (its writer died between create and
#: write) is stale.
UNWRITTEN_STALE_S = 30.0
POLL_S = 0.25


def process_start_time(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot (``/proc/<pid>/stat`` field 22), or None.

    None too for a zombie: a process that has exited and that no parent has reaped yet is gone.
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = text[text.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):  # zombie, dead
        return None
    return int(fields[19])


def owner_record(job: str) -> dict[str, Any]:
    pid = os.getpid()
    return {
        "host": socket.gethostname(),
        "pid": pid,
        "process_start": process_start_time(pid),
        "job": job,
        "acquired": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "token": uuid.uuid4().hex,
    }


def owner_is_dead(owner: dict[str, Any]) -> bool:
    """True only when the owner provably no longer runs (same host; pid gone or reused)."""
    if owner.get("host") != socket.gethostname():
        return False
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # it runs, as another user
    recorded = owner.get("process_start")
    current = process_start_time(pid)
    return recorded is not None and current is not None and current != recorded


def _read_owner(path: str) -> dict[str, Any] | None:
    """The owner recorded in ``path``; None when the file is gone; {} when it holds no owner yet."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        return None
    try:
        owner = json.loads(text)
    except ValueError:
        return {}
    return owner if isinstance(owner, dict) else {}


def _age_s(path: str) -> float:
    try:
        return time.time() - os.stat(path).st_mtime
    except FileNotFoundError:
        return 0.0


def _create(path: str, record: dict[str, Any]) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(record, fh, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    return True


def _is_stale(path: str, owner: dict[str, Any]) -> bool:
    if not owner:
        return _age_s(path) > UNWRITTEN_STALE_S
    return owner_is_dead(owner)


def _take_over(path: str, job: str) -> None:
    """Remove ``path`` if its owner is still the dead one we saw; one breaker at a time."""
    breaker = path + ".break"
    if not _create(breaker, owner_record(job)):
        if _is_stale(breaker, _read_owner(breaker) or {}):
            with contextlib.suppress(FileNotFoundError):
                os.remove(breaker)
        return
    try:
        owner = _read_owner(path)
        if owner is not None and _is_stale(path, owner):
            log.warning("taking over %s from a run that is no longer alive: %s", path, _describe(owner))
            os.remove(path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(breaker)


def _describe(owner: dict[str, Any]) -> str:
    if not owner:
        return "an owner that never wrote its record"
    return (
        f"{owner.get('job', '?')} run, pid {owner.get('pid', '?')} on host {owner.get('host', '?')} "
        f"since {owner.get('acquired', '?')}"
    )


@contextlib.contextmanager
def lake_lock(lake: Lake, name: str, *, job: str, wait_seconds: float = 0.0) -> Iterator[dict[str, Any] | None]:
    """Hold ``lake/locks/<name>.lock`` for the ``with`` block; yields the owner record written."""
    if not lake.is_local:
        log.warning("lake %s is not on a file system with atomic create: %s runs without a lock", lake.root, name)
        yield None
        return
    folder = lake.path(LOCK_DIR)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{name}.lock")
    record = owner_record(job)
    deadline = time.monotonic() + wait_seconds
    waited = False
    while not _create(path, record):
        owner = _read_owner(path)
        if owner is None:
            continue  # released between our create and our read
        if _is_stale(path, owner):
            _take_over(path, job)
            continue
        if time.monotonic() >= deadline:
            raise LockBusy(
                f"another {_describe(owner)} holds {path}: {job} waits for it to finish "
                f"(--set locks.wait_seconds=N waits up to N s); remove the file only if that process is gone"
            )
        if not waited:
            log.info("waiting up to %.0f s for %s (%s)", wait_seconds, path, _describe(owner))
            waited = True
        time.sleep(POLL_S)
    try:
        yield record
    finally:
        _release(path, record["token"])


def _release(path: str, token: str) -> None:
    owner = _read_owner(path)
    if owner and owner.get("token") == token:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
    else:
        log.warning("lock %s no longer holds this run's record: left as it is", path)


# -- a store read by many, replaced by one ----------------------------------------------------------
#: How long a full run waits for the readers of the store it replaces before it gives up.
REPLACE_WAIT_S = 3600.0


def _readers(lake: Lake, dataset: str) -> str:
    return lake.path(LOCK_DIR, f"store-{dataset}.readers")


def _live_readers(folder: str) -> list[dict[str, Any]]:
    """The readers registered in ``folder`` that still run (a dead one's file is removed)."""
    live = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        path = os.path.join(folder, name)
        owner = _read_owner(path)
        if owner is None:
            continue
        if _is_stale(path, owner):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
            continue
        live.append(owner)
    return live


@contextlib.contextmanager
def store_reader(lake: Lake, dataset: str, *, job: str, wait_seconds: float = 0.0) -> Iterator[None]:
    """Read ``dataset``'s store for the block, never while a full run swaps it (a shared lock).

    The reader registers itself, then looks for a replace in progress (its lock,
    ``store-<dataset>.replace.lock``); the replacer takes that lock, then waits for the
    registered readers. Each announces itself before it looks, so one of them always sees the
    other. A reader that finds a replace withdraws and waits up to ``wait_seconds``, then
    refuses in one line.
    """
    if not lake.is_local:
        yield
        return
    folder = _readers(lake, dataset)
    os.makedirs(folder, exist_ok=True)
    intent = lake.path(LOCK_DIR, f"store-{dataset}.replace.lock")
    deadline = time.monotonic() + wait_seconds
    while True:
        record = owner_record(job)
        mine = os.path.join(folder, f"{record['token']}.json")
        _create(mine, record)
        owner = _read_owner(intent)
        if owner is None or _is_stale(intent, owner):
            break
        os.remove(mine)
        if time.monotonic() >= deadline:
            raise LockBusy(
                f"store {dataset!r} is being replaced by a full {_describe(owner)}: {job} did not read it "
                "(--set locks.wait_seconds=N waits up to N s); run it again when the replace has finished"
            )
        time.sleep(POLL_S)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(mine)


@contextlib.contextmanager
def store_replacer(lake: Lake, dataset: str, *, job: str, wait_seconds: float = REPLACE_WAIT_S) -> Iterator[None]:
    """Hold ``dataset``'s store alone for the block (the swap of a full run): new readers wait, and the
    block starts once the readers already reading are done."""
    with lake_lock(lake, f"store-{dataset}.replace", job=job):
        if not lake.is_local:
            yield
            return
        folder = _readers(lake, dataset)
        deadline = time.monotonic() + wait_seconds
        logged = 0.0
        while readers := _live_readers(folder):
            if time.monotonic() >= deadline:
                raise LockBusy(
                    f"store {dataset!r} is still read by {_describe(readers[0])} after {wait_seconds:.0f} s: "
                    "the full run did not replace it (its rows are written, the store is as it was)"
                )
            if time.monotonic() - logged > 30:
                log.info(
                    "waiting for %d reader(s) of store %r before replacing it: %s",
                    len(readers),
                    dataset,
                    _describe(readers[0]),
                )
                logged = time.monotonic()
            time.sleep(POLL_S)
        yield
