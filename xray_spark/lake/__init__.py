"""The lake: one root under which every job reads and writes (``--lake DIR``, default ``<home>/lake``).

::

    lake/
      petastorm/<dataset>/         the training store (Petastorm / Parquet), with _xray_store.json
      tables/<table>/              Parquet tables: studies, quarantine, boxes, ...
      reports/<job>/<run_id>/      summaries, lists of missing files, plots
      models/<model_version>/      trained models (jobs/train.py)

The root may be a local path or a URL Spark and pyarrow both understand (``hdfs://``,
``s3a://`` for Spark with ``s3://`` for pyarrow is the one case that needs care).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import uuid
from typing import Any
from urllib.parse import urlparse

import pyarrow.fs as pafs

from xray_spark.errors import UsageError


def is_inside(path: str, root: str) -> bool:
    """Whether ``path`` is ``root`` or under it, links resolved (a key or spool "outside" by a link is not)."""
    real, top = os.path.realpath(path), os.path.realpath(root)
    return os.path.commonpath([real, top]) == top


def new_run_id() -> str:
    """A run's id: its UTC start time and six random hex digits (sortable, unique per run)."""
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def local_path(path: str) -> str | None:
    """The local file system path of ``path`` (a plain path or a ``file://`` URL); None for other URLs."""
    if path.startswith("file://"):
        return path[len("file://") :]
    if "://" in path:
        return None
    return path


def write_json_atomic(path: str, value: Any) -> None:
    """A local JSON file whole or not at all: a temporary file renamed into place (NaN written as JSON's NaN)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(value, fh, indent=2, default=float)
    os.replace(tmp, path)


def same_volume(a: str, b: str) -> bool:
    """Whether two local folders (or their nearest existing parents) lie on one file system, so a rename
    between them is one step (a folder behind a symlink to another disk is not)."""

    def device(path: str) -> int:
        path = os.path.realpath(path)
        while not os.path.exists(path):
            path = os.path.dirname(path)
        return os.stat(path).st_dev

    return device(a) == device(b)


def _is_url(path: str) -> bool:
    return bool(urlparse(path).scheme) and not os.path.splitdrive(path)[0]


@dataclasses.dataclass(frozen=True)
class Lake:
    root: str

    @classmethod
    def at(cls, root: str) -> Lake:
        """The lake at ``root``; a local one that is not a folder, or whose path Petastorm would misread, is refused."""
        if _is_url(root) and not root.startswith("file:"):
            return cls(root.rstrip("/"))
        local = os.path.abspath(root[len("file://") :] if root.startswith("file://") else root)
        if os.path.exists(local) and not os.path.isdir(local):
            raise UsageError(f"the lake {local} is a file, not a folder: pass --lake DIR (a folder, or one to create)")
        if "#" in local or "?" in local:
            raise UsageError(
                f"the lake path {local} holds '#' or '?', which Petastorm reads as the end of a URL's path "
                "(it would write elsewhere): choose a lake path without them"
            )
        return cls(local)

    @property
    def is_local(self) -> bool:
        return not _is_url(self.root)

    def require_local(self, job: str, why: str) -> None:
        """Refuse, before any work, a job that needs local file APIs on a remote lake (``why``: what needs them)."""
        if not self.is_local:
            raise UsageError(f"{job} {why}: use a local or mounted --lake for {job} (the lake is {self.root})")

    def path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def url(self, *parts: str) -> str:
        """A URL for Spark and Petastorm (``file:///...`` for a local lake)."""
        return self.url_of(self.path(*parts))

    def url_of(self, path: str) -> str:
        """The Spark and Petastorm URL of a path in the lake (``file://`` before a local path)."""
        return "file://" + path if self.is_local else path

    def store_url(self, dataset: str) -> str:
        return self.url("petastorm", dataset)

    def table_url(self, name: str) -> str:
        return self.url("tables", name)

    def report_dir(self, job: str, run_id: str) -> str:
        return self.path("reports", job, run_id)

    # -- small files (manifests, reports) ------------------------------------------------
    def _fs(self) -> tuple[pafs.FileSystem, str]:
        if self.is_local:
            return pafs.LocalFileSystem(), ""
        fs, base = pafs.FileSystem.from_uri(self.root)
        return fs, base

    def filesystem(self, path: str) -> tuple[pafs.FileSystem, str]:
        """pyarrow's file system of the lake and the path of ``path`` (a lake path) on it: for readers that are not
        Spark (the web app, the worklist pages)."""
        return self._resolve(path)

    def _resolve(self, path: str) -> tuple[pafs.FileSystem, str]:
        fs, base = self._fs()
        if self.is_local:
            return fs, path
        return fs, base + path[len(self.root) :]

    def write_bytes(self, path: str, data: bytes) -> None:
        fs, p = self._resolve(path)
        fs.create_dir(p.rsplit("/", 1)[0], recursive=True)
        tmp = p + ".tmp"
        with fs.open_output_stream(tmp) as out:
            out.write(data)
        fs.move(tmp, p)

    def write_text(self, path: str, text: str) -> None:
        self.write_bytes(path, text.encode("utf-8"))

    def write_json(self, path: str, value: Any) -> None:
        self.write_text(path, json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")

    def read_json(self, path: str) -> Any:
        fs, p = self._resolve(path)
        with fs.open_input_stream(p) as stream:
            return json.loads(stream.read().decode("utf-8"))

    def exists(self, path: str) -> bool:
        fs, p = self._resolve(path)
        return fs.get_file_info(p).type != pafs.FileType.NotFound

    def delete_dir(self, path: str) -> None:
        fs, p = self._resolve(path)
        if fs.get_file_info(p).type == pafs.FileType.Directory:
            fs.delete_dir(p)

    def delete_file(self, path: str) -> None:
        fs, p = self._resolve(path)
        if fs.get_file_info(p).type == pafs.FileType.File:
            fs.delete_file(p)

    def move(self, src: str, dst: str) -> None:
        """Rename a file or folder (one rename on a local or HDFS lake; copy and delete on S3)."""
        fs, s = self._resolve(src)
        _, d = self._resolve(dst)
        fs.create_dir(d.rsplit("/", 1)[0], recursive=True)
        try:
            fs.move(s, d)
        except (OSError, NotImplementedError):
            # Object stores have no folder rename: copy the folder, then delete the source.
            if fs.get_file_info(s).type != pafs.FileType.Directory:
                raise
            pafs.copy_files(s, d, source_filesystem=fs, destination_filesystem=fs)
            fs.delete_dir(s)

    def list_files(self, folder: str, suffix: str = "") -> list[str]:
        """The files directly in ``folder`` whose names end in ``suffix`` (sorted, lake paths)."""
        fs, p = self._resolve(folder)
        infos = fs.get_file_info(pafs.FileSelector(p, allow_not_found=True))
        names = sorted(i.base_name for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(suffix))
        return [f"{folder}/{name}" for name in names]
