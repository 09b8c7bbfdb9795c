"""The driver JVM's class-data archive: Spark's classes loaded once, mapped by every later job.

A job's driver JVM loads and verifies several thousand of Spark's classes before it runs a
query; for a small job that is about half of the JVM's CPU (``bench/results/job_start_cpu2.json``).
Java 17 writes the classes a run loaded to an archive when the JVM exits
(``-XX:ArchiveClassesAtExit``) and maps that archive, already parsed and verified, into the
next run (``-XX:SharedArchiveFile``).

* The first job on a machine writes it, to a temporary name; it takes the archive's name only
  when that JVM exited cleanly, so a killed job leaves no half-written archive behind.
* One job at a time writes (a claim file made with ``O_EXCL``); the others run without one.
* The archive's name is a digest of the ``java`` binary and Spark's jars (their folder, names
  and sizes): another JDK, another Spark or another virtual environment makes another archive.
  The JVM checks the archive itself as well and, on any mismatch, runs without it: the archive
  can make a job start faster, never fail.
* Its messages go to stderr with the JVM's other warnings (stdout carries data only), the
  class-data sharing ones off.

* Not with a Java agent or a flight recording (``-javaagent``, ``-agentlib``, ``-agentpath``,
  ``StartFlightRecording`` in ``JAVA_TOOL_OPTIONS``, ``JDK_JAVA_OPTIONS`` or the driver's options):
  Java 17 crashes when a class-file hook meets a mapped dynamic archive.

``spark.class_archive`` names the folder (``off``: none).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)

#: JVM warnings to stderr, without class-data sharing's own (a skipped class, a mismatched archive).
QUIET = "-Xlog:disable -Xlog:all=warning,cds=off,cds+dynamic=off:stderr"
#: A claim older than this, or whose process is gone, is from a job that died while writing: the next job writes.
STALE_CLAIM_S = 3600.0


@dataclasses.dataclass
class ClassArchive:
    """What one JVM does with the archive: ``options`` for its command line, :meth:`finish` after it exits."""

    options: str = ""
    writing: Path | None = None
    final: Path | None = None
    claim: Path | None = None

    def finish(self, clean_exit: bool) -> None:
        """The written archive takes its name when the JVM that wrote it exited cleanly; else it is removed."""
        if self.writing is None or self.final is None:
            return
        try:
            if clean_exit and self.writing.exists() and self.writing.stat().st_size > 0:
                os.replace(self.writing, self.final)
                log.info("JVM class archive written: %s", self.final)
            else:
                self.writing.unlink(missing_ok=True)
        finally:
            if self.claim is not None:
                self.claim.unlink(missing_ok=True)
            self.writing = None


def spark_jars() -> Path | None:
    """The jars folder of the Spark that the driver runs (``SPARK_HOME``, else pyspark's own)."""
    home = os.environ.get("SPARK_HOME")
    if home:
        return Path(home) / "jars"
    import pyspark

    return Path(pyspark.__file__).parent / "jars"


def archive_key(java: str) -> str:
    """A digest of what the archive depends on: the JDK (its binary) and Spark's class path."""
    digest = hashlib.sha256()
    java_file = Path(os.path.realpath(java))
    stat = java_file.stat()
    digest.update(f"{java_file}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    digest.update(os.environ.get("SPARK_CONF_DIR", "").encode())
    jars = spark_jars()
    if jars is not None and jars.is_dir():
        digest.update(f"{jars.resolve()}\n".encode())  # the JVM refuses an archive made with another class path
        for jar in sorted(jars.glob("*.jar")):
            digest.update(f"{jar.name}:{jar.stat().st_size}\n".encode())
    return digest.hexdigest()[:16]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid > 0


def _claim(path: Path) -> bool:
    """True when this process now holds the claim to write the archive."""
    with contextlib.suppress(FileNotFoundError, ValueError):
        holder = int(path.read_text().strip() or 0)
        if not _alive(holder) or time.time() - path.stat().st_mtime > STALE_CLAIM_S:
            path.unlink(missing_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    os.write(fd, f"{os.getpid()}\n".encode())
    os.close(fd)
    return True


#: JVM options that install a class-file hook (see the module's description).
AGENT_OPTIONS = ("-javaagent", "-agentlib", "-agentpath", "StartFlightRecording")


def agent_in(*options: str) -> bool:
    """Whether the JVM's options (with those of the environment) load an agent or start a flight recording."""
    given = " ".join([*options, os.environ.get("JAVA_TOOL_OPTIONS", ""), os.environ.get("JDK_JAVA_OPTIONS", "")])
    return any(flag in given for flag in AGENT_OPTIONS)


def class_archive(folder: str, java: str, *, write: bool = True, jvm_options: str = "") -> ClassArchive:
    """The archive to map, or (``write``) to write at exit when there is none yet; no archive when ``folder``
    is ``off`` or cannot be written, or the JVM (``jvm_options``) runs an agent: the job then starts as it
    would without one."""
    if folder.strip().lower() == "off" or agent_in(jvm_options):
        return ClassArchive()
    try:
        where = Path(os.path.expanduser(folder))
        where.mkdir(parents=True, exist_ok=True)
        key = archive_key(java)
        final = where / f"spark-{key}.jsa"
        if final.is_file() and final.stat().st_size > 0:
            return ClassArchive(f"-XX:SharedArchiveFile={final} {QUIET}")
        claim = where / f"spark-{key}.claim"
        if not write or not _claim(claim):
            return ClassArchive(QUIET)
    except OSError as exc:
        log.info("no JVM class archive (%s): the job starts without one", exc)
        return ClassArchive(QUIET)
    for left in where.glob(f"spark-{key}.*.writing"):  # from a writer killed before its JVM exited
        left.unlink(missing_ok=True)
    writing = where / f"spark-{key}.{os.getpid()}.writing"
    return ClassArchive(f"-XX:ArchiveClassesAtExit={writing} {QUIET}", writing, final, claim)
