"""Readers' accounts, their sessions and the throttle on failed sign-ins, in one SQLite file outside the lake.

Passwords are stored as scrypt hashes (the standard library's ``hashlib.scrypt``, n=2^14, r=8,
p=1, a 16-byte salt per password): memory-hard, so a stolen file is slow to crack on a GPU.
A session is a random id in a signed cookie; signing out deletes it here, so a copied cookie
stops working too. After ``free_failures`` failed sign-ins for a name or from an address, each
next attempt waits 1 s, then 2 s, 4 s, ... (up to ``max_delay``) before it is even checked.
The wait is read, the password checked and the failure counted as one step per name and per
address (:meth:`Accounts.attempt`): simultaneous guesses cannot share the free failures. The
app is one process, whose threads share these locks.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import sqlite3
import threading
import time
from contextlib import closing
from dataclasses import dataclass

from xray_spark.errors import UsageError

SCRYPT = {"n": 2**14, "r": 8, "p": 1}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MIN_PASSWORD = 10

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY, hash TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (sid TEXT PRIMARY KEY, name TEXT NOT NULL, csrf TEXT NOT NULL,
    created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS failures (key TEXT PRIMARY KEY, count INTEGER NOT NULL, last REAL NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **SCRYPT, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${SCRYPT['n']}${SCRYPT['r']}${SCRYPT['p']}${b64(salt).decode()}${b64(digest).decode()}"


def check_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=32)
    except ValueError:
        return False
    return hmac.compare_digest(got, base64.b64decode(digest))


#: Checked against when the name is unknown, so a wrong name takes as long as a wrong password.
_DUMMY = hash_password(secrets.token_hex(16))


@dataclass(frozen=True)
class Session:
    sid: str
    name: str
    csrf: str


class Accounts:
    """The accounts file; a connection per call, so any thread of the server may use it."""

    def __init__(self, path: str, *, free_failures: int = 3, max_delay: float = 900.0) -> None:
        self.path = os.path.abspath(path)
        self.free_failures, self.max_delay = free_failures, max_delay
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        fresh = not os.path.exists(self.path)
        with closing(self._connect()) as db, db:
            db.executescript(SCHEMA)
        if fresh:
            os.chmod(self.path, 0o600)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA busy_timeout=30000")
        return db

    def secret(self) -> bytes:
        """The key that signs the cookies: made once, kept in the file."""
        with closing(self._connect()) as db:
            db.execute("INSERT OR IGNORE INTO meta VALUES ('secret', ?)", (secrets.token_hex(32),))
            return bytes.fromhex(db.execute("SELECT value FROM meta WHERE key = 'secret'").fetchone()[0])

    def add_user(self, name: str, password: str) -> bool:
        """Add ``name`` or change its password; True when it is new."""
        if not NAME.match(name):
            raise UsageError(f"a user name is 1-64 letters, digits or ._@- (starting with a letter or digit): {name!r}")
        if len(password) < MIN_PASSWORD:
            raise UsageError(f"the password must be at least {MIN_PASSWORD} characters")
        with closing(self._connect()) as db:
            new = db.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone() is None
            db.execute("INSERT OR REPLACE INTO users VALUES (?, ?, ?)", (name, hash_password(password), time.time()))
            if not new:  # a changed password ends the user's sessions
                db.execute("DELETE FROM sessions WHERE name = ?", (name,))
        return new

    def users(self) -> list[str]:
        with closing(self._connect()) as db:
            return [r[0] for r in db.execute("SELECT name FROM users ORDER BY name")]

    def attempt(self, name: str, password: str, address: str) -> Session | float | None:
        """One sign-in: a new session when the password is right, None when it is wrong, or the seconds to wait
        (the password not checked) after too many failures for the name or from the address.

        The wait is read, the password checked and the outcome counted while this attempt holds
        the name's and the address's locks: simultaneous guesses for one name are checked one at
        a time, so three free failures are three, and each wait lets one through. Readers signing
        in at once from one address (a ward behind one proxy) wait their turn of a password check
        (about 50 ms each); none is refused.
        """
        keys = sorted({f"name:{name.lower()}", f"addr:{address}"})
        locks = [self._lock_of(key) for key in keys]
        for lock in locks:
            lock.acquire()
        try:
            left = self._wait_left(keys)
            if left > 0:
                return left
            return self._check(name, password, keys)
        finally:
            for lock in reversed(locks):
                lock.release()

    def _lock_of(self, key: str) -> threading.Lock:
        with self._locks_guard:
            if len(self._locks) > 10_000:  # forget the idle ones (a lock held now stays referenced by its holder)
                self._locks = {k: v for k, v in self._locks.items() if v.locked()}
            return self._locks.setdefault(key, threading.Lock())

    def _wait_left(self, keys: list[str]) -> float:
        now, left = time.time(), 0.0
        with closing(self._connect()) as db:
            for key in keys:
                row = db.execute("SELECT count, last FROM failures WHERE key = ?", (key,)).fetchone()
                if row and row[0] >= self.free_failures:
                    delay = min(self.max_delay, 2.0 ** (row[0] - self.free_failures))
                    left = max(left, row[1] + delay - now)
        return max(left, 0.0)

    def _check(self, name: str, password: str, keys: list[str]) -> Session | None:
        with closing(self._connect()) as db:
            row = db.execute("SELECT hash FROM users WHERE name = ?", (name,)).fetchone()
        ok = check_password(password, row[0] if row else _DUMMY) and row is not None
        with closing(self._connect()) as db:
            if not ok:
                for key in keys:
                    db.execute(
                        "INSERT INTO failures VALUES (?, 1, ?) "
                        "ON CONFLICT(key) DO UPDATE SET count = count + 1, last = excluded.last",
                        (key, time.time()),
                    )
                return None
            db.executemany("DELETE FROM failures WHERE key = ?", [(k,) for k in keys])
            session = Session(secrets.token_urlsafe(32), name, secrets.token_urlsafe(32))
            db.execute("INSERT INTO sessions VALUES (?, ?, ?, ?)", (session.sid, name, session.csrf, time.time()))
        return session

    def session(self, sid: str, max_age_s: float) -> Session | None:
        with closing(self._connect()) as db:
            row = db.execute("SELECT name, csrf, created FROM sessions WHERE sid = ?", (sid,)).fetchone()
            if row is None:
                return None
            if time.time() - row[2] > max_age_s:
                db.execute("DELETE FROM sessions WHERE sid = ?", (sid,))
                return None
        return Session(sid, row[0], row[1])

    def sign_out(self, sid: str) -> None:
        with closing(self._connect()) as db:
            db.execute("DELETE FROM sessions WHERE sid = ?", (sid,))
