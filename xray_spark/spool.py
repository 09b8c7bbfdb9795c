"""The DICOM node's spool: where received instances become durable, and where the nightly run finds them.

::

    SPOOL/
      .xray-spool      marks the folder as a spool (prepare and nightly read incoming/ of it)
      .receiving/      instances being written; never read by prepare, emptied at each start
      incoming/        one file per SOP Instance UID: <uid>.dcm, complete and synced
      done/            files a successful night moved out of incoming/ (dicom_node.after_ingest=done)
      corrections/     an instance re-sent with other bytes under a SOP Instance UID the spool holds:
                       <uid>.<digest>.dcm, kept for a person, never read by a night, never over the first
      ingested.txt     names in incoming/ that a successful night ingested (after_ingest=keep)
      priors.txt       SOP Instance UIDs fetched as a new patient's earlier films (never delivered back)

A file reaches ``incoming/`` only whole: written under ``.receiving/``, flushed and synced,
then linked into place (a link, not a rename, so a second copy of the same instance never
replaces the first) and its folder synced. A file a night ingested is never replaced: the film
in the lake was scored from it, and delivery re-joins its identity from it. What a PACS was
told was stored survives a crash of the node or of the machine. The spool holds what the PACS
sent, identity included, so it lives outside the lake (:func:`open_spool` refuses a spool
inside it), as the pseudonym key does.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from xray_spark.errors import UsageError
from xray_spark.lake import is_inside

MARKER = ".xray-spool"
RECEIVING = ".receiving"
INCOMING = "incoming"
DONE = "done"
PRIORS = "priors.txt"
CORRECTIONS = "corrections"
LEDGER = "ingested.txt"
SUFFIX = ".dcm"
#: What ``dicom_node.after_ingest`` may be.
AFTER_INGEST = ("keep", "done")
#: A DICOM UID: digit components separated by dots, at most 64 characters (PS3.5 9.1).
UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


#: What :meth:`Spool.store_file` did with an instance.
STORED, HELD, CORRECTION = "stored", "held", "correction"


def file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def same_bytes(a: str, b: str) -> bool:
    """Whether two files hold the same bytes (compared a MiB at a time)."""
    if os.path.getsize(a) != os.path.getsize(b):
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


class BadInstance(ValueError):
    """An instance the spool cannot name (its SOP Instance UID is not a UID)."""


def is_spool(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, MARKER))


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Spool:
    root: str

    @property
    def incoming(self) -> str:
        return os.path.join(self.root, INCOMING)

    @property
    def done(self) -> str:
        return os.path.join(self.root, DONE)

    @property
    def receiving(self) -> str:
        return os.path.join(self.root, RECEIVING)

    def name_of(self, sop_uid: str) -> str:
        uid = (sop_uid or "").strip().rstrip("\0")
        if len(uid) > 64 or not UID.match(uid):
            raise BadInstance("the SOP Instance UID is not a DICOM UID (digits and dots, at most 64 characters)")
        return uid + SUFFIX

    def mark_priors(self, sop_uids: Iterable[str]) -> None:
        """Record instances fetched as a new patient's earlier films (``priors.txt``): never delivered back."""
        with open(os.path.join(self.root, PRIORS), "a", encoding="utf-8") as fh:
            fh.writelines(f"{uid}\n" for uid in sop_uids)
            fh.flush()
            os.fsync(fh.fileno())

    def priors(self) -> set[str]:
        """The SOP Instance UIDs :meth:`mark_priors` recorded."""
        try:
            with open(os.path.join(self.root, PRIORS), encoding="utf-8") as fh:
                return {line.strip() for line in fh if line.strip()}
        except FileNotFoundError:
            return set()

    def holds(self, sop_uid: str) -> bool:
        """Whether the spool holds an instance of this SOP Instance UID (in ``incoming/`` or ``done/``)."""
        name = self.name_of(sop_uid)
        return any(os.path.exists(os.path.join(folder, name)) for folder in (self.incoming, self.done))

    @property
    def corrections(self) -> str:
        return os.path.join(self.root, CORRECTIONS)

    def store(self, sop_uid: str, data: bytes) -> str:
        """:meth:`store_file` for bytes in memory (written under ``.receiving/`` first)."""
        temporary = os.path.join(self.receiving, f"{secrets.token_hex(8)}.part")
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            return self.store_file(sop_uid, temporary)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(temporary)

    def store_file(self, sop_uid: str, received: str) -> str:
        """Make one received, synced file (under ``.receiving/``) durable in the spool; says what became of it.

        ``STORED``: linked into ``incoming/`` (a link, so a second copy never replaces the first).
        ``HELD``: the same bytes are in the spool already (in ``incoming/``, ``done/`` or among the
        corrections). ``CORRECTION``: an instance of this SOP Instance UID with other bytes is there
        already, perhaps ingested and scored: that file is never replaced, this one is kept in
        ``corrections/<uid>.<digest>.dcm`` for a person to look at, and no night reads it.
        Raises :class:`OSError` when it cannot be written (a full disk): nothing is left behind then.
        """
        name = self.name_of(sop_uid)
        for existing in (os.path.join(self.incoming, name), os.path.join(self.done, name)):
            if os.path.exists(existing):
                return self._beside(existing, received, name)
        try:
            os.link(received, os.path.join(self.incoming, name))
        except FileExistsError:  # the same instance arrived on another association meanwhile
            return self._beside(os.path.join(self.incoming, name), received, name)
        _fsync_dir(self.incoming)
        return STORED

    def _beside(self, existing: str, received: str, name: str) -> str:
        """``received`` where ``existing`` holds its SOP Instance UID already: held, or kept as a correction."""
        if same_bytes(existing, received):
            return HELD
        os.makedirs(self.corrections, mode=0o700, exist_ok=True)
        kept = os.path.join(self.corrections, f"{name[: -len(SUFFIX)]}.{file_digest(received)[:16]}{SUFFIX}")
        try:
            os.link(received, kept)
        except FileExistsError:
            return HELD  # this very correction was sent before
        _fsync_dir(self.corrections)
        return CORRECTION

    def correction_files(self) -> list[str]:
        """The corrections kept (re-sent instances with other bytes than the spool's), in name order."""
        try:
            return sorted(os.path.join(self.corrections, n) for n in os.listdir(self.corrections) if n.endswith(SUFFIX))
        except FileNotFoundError:
            return []

    def _ledger(self) -> set[str]:
        try:
            with open(os.path.join(self.root, LEDGER), encoding="ascii") as fh:
                return {line.strip() for line in fh if line.strip()}
        except FileNotFoundError:
            return set()

    def pending(self) -> list[str]:
        """The paths of received instances no successful night has ingested yet, in name order."""
        ingested = self._ledger()
        try:
            names = sorted(n for n in os.listdir(self.incoming) if n.endswith(SUFFIX) and n not in ingested)
        except FileNotFoundError:
            return []
        return [os.path.join(self.incoming, name) for name in names]

    def mark_ingested(self, paths: Iterable[str], after_ingest: str) -> int:
        """After a successful night: the files it ingested are kept and marked, or moved to ``done/``."""
        names = [os.path.basename(p) for p in paths]
        if after_ingest == "done":
            os.makedirs(self.done, mode=0o700, exist_ok=True)
            for name in names:
                self._move_done(name)
            _fsync_dir(self.done)
            _fsync_dir(self.incoming)
        present = set(os.listdir(self.incoming))
        # The ledger names only what is still in incoming/: it shrinks as files move or are removed.
        kept = sorted(n for n in self._ledger() | set(names) if n in present)
        path = os.path.join(self.root, LEDGER)
        with open(path + ".tmp", "w", encoding="ascii") as fh:
            fh.writelines(f"{name}\n" for name in kept)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(path + ".tmp", path)
        return len(names)

    def _move_done(self, name: str) -> None:
        """``incoming/<name>`` to ``done/``, never over a file there (the source of a film in the lake)."""
        source = os.path.join(self.incoming, name)
        try:
            os.link(source, os.path.join(self.done, name))
        except FileNotFoundError:
            return
        except FileExistsError:
            self._beside(os.path.join(self.done, name), source, name)
        os.remove(source)

    def clear_receiving(self) -> int:
        """Remove what a killed node left half-written (never answered Success); how many files."""
        removed = 0
        for name in os.listdir(self.receiving):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(self.receiving, name))
                removed += 1
        return removed


def open_spool(folder: str, lake_root: str | None, *, create: bool = True) -> Spool:
    """The spool at ``folder`` (made with its layout when ``create``); refused inside the lake."""
    if not folder:
        raise UsageError("dicom_node.spool is empty: name a folder outside the lake for received files")
    if lake_root and is_inside(folder, lake_root):
        raise UsageError(
            f"the DICOM spool {folder} is inside the lake: received files carry names and birth dates; "
            "keep the spool outside the lake (dicom_node.spool), as the pseudonym key is"
        )
    root = os.path.abspath(folder)
    if not create:
        if not is_spool(root):
            raise UsageError(f"{folder} is not a DICOM node's spool (it has no {MARKER})")
        return Spool(root)
    if os.path.isdir(root) and os.listdir(root) and not is_spool(root):
        raise UsageError(f"{folder} holds files and is not a spool: name an empty or new folder for dicom_node.spool")
    for sub in ("", RECEIVING, INCOMING):
        os.makedirs(os.path.join(root, sub), mode=0o700, exist_ok=True)
    if not is_spool(root):
        with open(os.path.join(root, MARKER), "w", encoding="utf-8") as fh:
            json.dump({"what": "xray-spark DICOM node spool", "layout": 1}, fh)
    return Spool(root)


def where_now(path: str) -> str:
    """Where a file a night read from a spool's ``incoming/`` lies now: there, or in ``done/`` once the night moved
    it (``dicom_node.after_ingest: done``); any other path as it is."""
    folder, name = os.path.split(path)
    root = os.path.dirname(folder)
    if os.path.basename(folder) == INCOMING and not os.path.exists(path) and is_spool(root):
        return os.path.join(root, DONE, name)
    return path
