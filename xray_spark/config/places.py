"""Where the product keeps its files when nobody says: never relative to the working directory.

Jobs and services run from cron and systemd, each in some working directory; a path that
meant "here" would be a different place for each. So every path setting is made absolute
when the settings are loaded:

* a path written in a configuration file is relative to that file's folder
  (``conf/local.yaml``'s ``lake: ../lake`` is the repository's ``lake/`` from anywhere);
* a path given on the command line (``--lake``, ``--set privacy.identity_dir=...``) is
  relative to the working directory, as a shell user expects;
* a default is a place under the product's home, :func:`home`: ``$XRAY_SPARK_HOME``, else
  ``$XDG_DATA_HOME/xray-spark``, else ``~/.local/share/xray-spark`` (a systemd unit sets
  ``XRAY_SPARK_HOME=/var/lib/xray-spark``, its StateDirectory).

A URL (``hdfs://...``, ``s3a://...``) and an empty value (a file that is not used) stay as
they are. The services' state folders (pid, log, ready file) are under ``<home>/run``,
named by the service and what it serves, so ``stop`` finds what ``start`` started from the
same arguments (:func:`service_state_dir`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

HOME_ENV = "XRAY_SPARK_HOME"


def home() -> Path:
    """The product's own folder for what the settings leave out (see the module's description)."""
    given = os.environ.get(HOME_ENV)
    if given:
        return Path(given).expanduser().absolute()
    data = os.environ.get("XDG_DATA_HOME")
    base = Path(data).expanduser() if data and os.path.isabs(os.path.expanduser(data)) else Path.home() / ".local/share"
    return (base / "xray-spark").absolute()


def is_url(value: str) -> bool:
    return "://" in value


def absolute(value: str, base: str | os.PathLike | None) -> str:
    """``value`` made absolute against ``base`` (None: the working directory); URLs, empty and absolute values kept."""
    if not value or is_url(value):
        return value
    expanded = os.path.expanduser(value)
    if os.path.isabs(expanded):
        return os.path.normpath(expanded)
    return os.path.normpath(os.path.join(os.fspath(base) if base is not None else os.getcwd(), expanded))


def service_state_dir(service: str, *serves: str) -> str:
    """``<home>/run/<service>-<digest>``: the state folder of ``service`` serving ``serves`` (absolute paths or URLs:
    the lake, the spool), the same for every command given the same settings."""
    digest = hashlib.sha256("\0".join(serves).encode()).hexdigest()[:12]
    return str(home() / "run" / f"{service}-{digest}")
