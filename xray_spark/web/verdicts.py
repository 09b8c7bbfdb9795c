"""Readers' verdicts in SQLite (WAL mode: many readers, one writer at a time, each waiting its turn).

Each time a reader saves a film's form, one *submission* is appended: who, when, which model's
calls were shown, *no finding* for the whole film or not, a free-text note (never used for
training), and a verdict per finding: ``confirm`` or ``reject`` for a finding the model called,
``missed`` for one it did not call. A reader's newest submission for a film is their verdict
(the older ones stay, as history); each reader has their own, so two readers who disagree are
both kept. A submission carries the form's one-time id, so a form posted twice is stored once.
Verdicts hold no patient identity: pseudonymous film ids, finding names and readers' names.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable, Mapping
from contextlib import closing
from dataclasses import dataclass, field

from xray_spark.errors import UsageError
from xray_spark.labels import FINDINGS

CONFIRM, REJECT, MISSED = "confirm", "reject", "missed"
#: Verdicts on a finding the model called, and on one it did not.
ON_CALLED, ON_UNCALLED = (CONFIRM, REJECT), (MISSED,)
MAX_NOTE = 2000

SCHEMA = """
CREATE TABLE IF NOT EXISTS submissions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, form_id TEXT NOT NULL UNIQUE, dataset TEXT NOT NULL,
    image_id TEXT NOT NULL, reader TEXT NOT NULL, at REAL NOT NULL, model_version TEXT NOT NULL,
    no_finding INTEGER NOT NULL, note TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS submissions_film ON submissions (dataset, image_id, reader, id);
CREATE TABLE IF NOT EXISTS findings (
    submission INTEGER NOT NULL REFERENCES submissions(id), finding TEXT NOT NULL, verdict TEXT NOT NULL,
    PRIMARY KEY (submission, finding));
"""


@dataclass(frozen=True)
class Verdict:
    """One reader's verdict on one film (a submission)."""

    dataset: str
    image_id: str
    reader: str
    model_version: str
    called: tuple[str, ...]  # the findings the model called on the film, as shown to the reader
    findings: Mapping[str, str] = field(default_factory=dict)  # finding -> confirm | reject | missed
    no_finding: bool = False
    note: str = ""
    at: float = 0.0

    def complete(self) -> bool:
        """Every called finding confirmed or rejected, or *no finding* for the film."""
        return self.no_finding or all(self.findings.get(f) in ON_CALLED for f in self.called)

    def positives(self) -> set[str]:
        return {f for f, v in self.findings.items() if v in (CONFIRM, MISSED)}


def check(verdict: Verdict) -> None:
    """Refuse what cannot be meant: a verdict not allowed for its finding, or *no finding* with a positive."""
    for finding, value in verdict.findings.items():
        if finding not in FINDINGS:
            raise UsageError(f"unknown finding {finding!r}")
        allowed = ON_CALLED if finding in verdict.called else ON_UNCALLED
        if value not in allowed:
            kind = "called" if finding in verdict.called else "not called"
            raise UsageError(f"{finding} was {kind} by the model: its verdict is one of {', '.join(allowed)}")
    if verdict.no_finding and verdict.positives():
        raise UsageError("'no finding' and a confirmed or missed finding contradict each other")
    if len(verdict.note) > MAX_NOTE:
        raise UsageError(f"the note is longer than {MAX_NOTE} characters")


#: How long a save waits for the verdicts file when another program holds it, before the reader is told it failed.
WRITE_WAIT_SECONDS = 5.0


class NotSaved(Exception):
    """A verdict that could not be stored now (the file is held by another program); nothing was stored."""


class VerdictStore:
    """The verdicts file; a connection per call, so every thread of the server may write.

    Opening it checks it (SQLite's ``quick_check``): a damaged file is refused with the way to
    repair it, before the app serves a page from it. A save that cannot get the file within
    :data:`WRITE_WAIT_SECONDS` raises :class:`NotSaved`: the reader is told at once, nothing is half-stored.
    """

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        try:
            with closing(self._connect()) as db:
                found = db.execute("PRAGMA quick_check").fetchone()[0]
                if found != "ok":
                    raise sqlite3.DatabaseError(found)
                db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise UsageError(
                f"the verdicts file {self.path} is damaged ({exc}): stop the app, move it aside and restore the "
                f"newest backup, or recover what it holds with: sqlite3 {self.path} .recover | sqlite3 {self.path}.new"
                f" (then move {self.path}.new into its place)"
            ) from None

    def _connect(self, wait: float = 60.0) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=wait, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")  # a verdict acknowledged to the reader survives a power cut
        db.execute(f"PRAGMA busy_timeout={int(wait * 1000)}")
        return db

    def record(self, verdict: Verdict, form_id: str) -> bool:
        """Store one submission; False when this form was stored before (posted twice); :class:`NotSaved` when the
        file is held by another program for longer than :data:`WRITE_WAIT_SECONDS`."""
        check(verdict)
        try:
            return self._insert(verdict, form_id)
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise NotSaved(f"the verdicts file is held by another program ({exc})") from None
            raise

    def _insert(self, verdict: Verdict, form_id: str) -> bool:
        with closing(self._connect(WRITE_WAIT_SECONDS)) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                cur = db.execute(
                    "INSERT OR IGNORE INTO submissions (form_id, dataset, image_id, reader, at, model_version, "
                    "no_finding, note) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        form_id,
                        verdict.dataset,
                        verdict.image_id,
                        verdict.reader,
                        verdict.at or time.time(),
                        verdict.model_version,
                        int(verdict.no_finding),
                        verdict.note,
                    ),
                )
                if cur.rowcount == 0:
                    db.execute("ROLLBACK")
                    return False
                rows = [(cur.lastrowid, f, v) for f, v in sorted(verdict.findings.items())]
                rows += [(cur.lastrowid, f, "called") for f in verdict.called if f not in verdict.findings]
                db.executemany("INSERT INTO findings VALUES (?, ?, ?)", rows)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return True

    def submissions(self, *, dataset: str | None = None, current_only: bool = False) -> list[dict]:
        """Every submission (oldest first) with its findings: id, form_id, dataset, image_id, reader, at,
        model_version, no_finding, note, findings {finding: verdict}, called (the calls shown), current."""
        where, args = ("WHERE s.dataset = ?", (dataset,)) if dataset else ("", ())
        with closing(self._connect()) as db:
            subs = db.execute(
                f"SELECT s.id, s.form_id, s.dataset, s.image_id, s.reader, s.at, s.model_version, s.no_finding, "
                f"s.note FROM submissions s {where} ORDER BY s.id",
                args,
            ).fetchall()
            marks = db.execute("SELECT submission, finding, verdict FROM findings").fetchall()
        by_sub: dict[int, dict[str, str]] = {}
        for sub, finding, value in marks:
            by_sub.setdefault(sub, {})[finding] = value
        out, newest = [], {}
        keys = ("id", "form_id", "dataset", "image_id", "reader", "at", "model_version", "no_finding", "note")
        for row in subs:
            record = dict(zip(keys, row, strict=True))
            marked = by_sub.get(record["id"], {})
            record["no_finding"] = bool(record["no_finding"])
            record["findings"] = {f: v for f, v in marked.items() if v != "called"}
            record["called"] = sorted(f for f, v in marked.items() if v in ("called", *ON_CALLED))
            newest[(record["dataset"], record["image_id"], record["reader"])] = record["id"]
            out.append(record)
        for record in out:
            record["current"] = newest[(record["dataset"], record["image_id"], record["reader"])] == record["id"]
        return [r for r in out if r["current"]] if current_only else out

    def answered(self, dataset: str, reader: str) -> set[str]:
        """The films of ``dataset`` the reader has given a verdict on."""
        with closing(self._connect()) as db:
            rows = db.execute(
                "SELECT DISTINCT image_id FROM submissions WHERE dataset = ? AND reader = ?", (dataset, reader)
            ).fetchall()
        return {r[0] for r in rows}

    def current_for(self, dataset: str, reader: str, image_ids: Iterable[str]) -> dict[str, dict]:
        """The reader's own newest submission per film among ``image_ids``."""
        ids = list(image_ids)
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        with closing(self._connect()) as db:
            rows = db.execute(
                f"SELECT s.id, s.image_id, s.no_finding, s.note, s.at FROM submissions s JOIN "
                f"(SELECT image_id, MAX(id) AS id FROM submissions WHERE dataset = ? AND reader = ? "
                f"AND image_id IN ({marks}) GROUP BY image_id) n ON s.id = n.id",
                (dataset, reader, *ids),
            ).fetchall()
            found = {r[0]: {"image_id": r[1], "no_finding": bool(r[2]), "note": r[3], "at": r[4]} for r in rows}
            if found:
                subs = ",".join("?" * len(found))
                for sub, finding, value in db.execute(
                    f"SELECT submission, finding, verdict FROM findings WHERE submission IN ({subs}) "
                    "AND verdict != 'called'",
                    tuple(found),
                ):
                    found[sub].setdefault("findings", {})[finding] = value
        return {v["image_id"]: {"findings": {}, **v} for v in found.values()}
