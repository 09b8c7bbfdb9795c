"""The driver JVM's class archive: Spark's classes parsed once per machine, mapped by every later job's JVM.

A Spark driver spends most of its start loading and verifying some 10,000 classes. Java's
application class-data sharing (AppCDS) keeps them in an archive that a later JVM maps instead
(``-XX:SharedArchiveFile``): a job's JVM starts with half the CPU (``bench/results/jvm_start_cpu2.json``).

The archive lives in the product's cache (``$XRAY_SPARK_CACHE``, else ``$XDG_CACHE_HOME/xray-spark``, else
``~/.cache/xray-spark``), named by a digest of the Java and Spark it belongs to. Where none exists, a JVM writes
one when it exits (``-XX:ArchiveClassesAtExit``) to a part file named by the process that started it; the next
driver to start checks the part with a JVM of its own (a torn archive crashes the JVM that maps it) and only then
renames it into place. ``xray-spark --class-archive`` writes one now. Everything
here is best effort: a cache that cannot be written, or a part that does not check, means a slower start, never a
failed job. ``spark.class_archive: false`` turns it off, and a JVM with a Java agent or a flight recording never
maps one (Java 17 crashes where a class-loading hook meets a mapped dynamic archive).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

#: JVM warnings go to stderr (stdout carries data only), the class archive's own left out: writing one lists each of
#: hundreds of classes it cannot hold, and a mismatched archive means only a slower start.
LOG_TO_STDERR = "-Xlog:disable -Xlog:all=warning:stderr -Xlog:cds*=off:stderr"
#: A part file younger than this may still be being written by a JVM that is exiting.
SETTLE_SECONDS = 60.0


#: Options that hook class loading: Java 17 crashes where such a hook (an agent, a flight recording) meets a mapped
#: dynamic archive, so a JVM given one (in its options or the environment's) gets no archive.
AGENT_OPTIONS = ("-javaagent", "-agentlib", "-agentpath", "StartFlightRecording")


def agent_in(*options: str) -> bool:
    """Whether the JVM's options, with those of the environment, load an agent or start a flight recording."""
    given = " ".join([*options, os.environ.get("JAVA_TOOL_OPTIONS", ""), os.environ.get("JDK_JAVA_OPTIONS", "")])
    return any(option in given for option in AGENT_OPTIONS)


def cache_dir() -> Path:
    """Where the archives are kept (outside any lake: they describe this machine's Java, not the data)."""
    explicit = os.environ.get("XRAY_SPARK_CACHE")
    if explicit:
        return Path(explicit) / "jvm"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "xray-spark" / "jvm"


def archive_key(java: str, jvm_options: str) -> str:
    """A digest of what an archive is only valid for: the Java binary, the Spark jars, the JVM's options."""
    import pyspark

    real = Path(java).resolve()
    jars = Path(pyspark.__file__).parent / "jars"
    # The JVM checks the jars' times too: a reinstall in the same place is another archive, not a refused one.
    parts = [str(real), str(real.stat().st_mtime_ns), pyspark.__version__, str(jars), str(jars.stat().st_mtime_ns)]
    parts.append(jvm_options)
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def jvm_options(
    java: str | None, jvm_options: str, *, enabled: bool = True, other: str = ""
) -> tuple[str, Path | None]:
    """The options that make a driver JVM map the archive, or write one as it exits, and that part file (None
    when the JVM maps one or writes none); only the logging options when there is no Java, the archive is
    turned off, the JVM runs an agent (in ``other``, its other options, or the environment's), or the cache
    cannot be used."""
    if not enabled or java is None or agent_in(jvm_options, other):
        return LOG_TO_STDERR, None
    try:
        folder = cache_dir()
        key = archive_key(java, jvm_options)
        final = folder / f"spark-{key}.jsa"
        parts = sorted(folder.glob(f"spark-{key}.*.part"))
        settled = [p for p in parts if not _alive(p) and time.time() - p.stat().st_mtime >= SETTLE_SECONDS]
        if final.exists():
            for stale in settled:  # written by a JVM that started before the archive was there
                stale.unlink(missing_ok=True)
            return f"{LOG_TO_STDERR} -XX:SharedArchiveFile={final}", None
        if any(finish(java, p, final) for p in settled):
            return f"{LOG_TO_STDERR} -XX:SharedArchiveFile={final}", None
        if any(_alive(p) for p in parts):
            return LOG_TO_STDERR, None  # another driver is writing it
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        part = folder / f"spark-{key}.{os.getpid()}.part"
        return f"{LOG_TO_STDERR} -XX:ArchiveClassesAtExit={part}", part
    except OSError as exc:
        log.debug("no class archive: %s", exc)
        return LOG_TO_STDERR, None


def _alive(part: Path) -> bool:
    """Whether the process that named ``part`` still runs (its JVM will write it when it exits)."""
    try:
        os.kill(int(part.name.rsplit(".", 2)[-2]), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def finish(java: str, part: Path, final: Path | None = None) -> bool:
    """Rename a written part into place once a JVM of its own has mapped it (a part that does not map is
    removed); False when there is none or it does not map. Called by the process whose JVM wrote it as soon as
    that JVM has exited, and by a later driver for a part whose writer has gone."""
    final = final or part.with_name(part.name.split(".", 1)[0] + ".jsa")
    try:
        if not part.exists():
            return False
        # a torn part crashes this JVM: its crash report goes to the temp folder, not the working directory
        crash = os.path.join(tempfile.gettempdir(), "xray-spark-archive-check-%p.log")
        check = [java, f"-XX:SharedArchiveFile={part}", "-Xshare:on", f"-XX:ErrorFile={crash}"]
        check += ["-cp", _spark_class_path()]
        checked = subprocess.run(
            [*check, *LOG_TO_STDERR.split(), "-version"],
            capture_output=True,
            timeout=60,
        )
        if checked.returncode == 0:
            os.replace(part, final)
            prune(part.parent, keep=final)
            return True
        part.unlink()
    except (OSError, subprocess.SubprocessError) as exc:
        log.debug("class archive part %s: %s", part, exc)
    return False


#: An archive of another key (an older Java, Spark or option set) not written or used for this long is removed
#: when a new one is written: each is about 140 MB, and a key that is still in use writes its archive again.
STALE_DAYS = 30


def prune(folder: Path, keep: Path) -> list[Path]:
    """Remove the archives of other keys unused for :data:`STALE_DAYS` and the parts whose writer has gone and left
    them for a day; the ones removed."""
    removed, now = [], time.time()
    for path in [*folder.glob("spark-*.jsa"), *folder.glob("spark-*.part")]:
        try:
            stat = path.stat()
            used = max(stat.st_mtime, stat.st_atime)
            stale = path.suffix == ".jsa" and now - used > STALE_DAYS * 86400
            orphan = path.suffix == ".part" and not _alive(path) and now - stat.st_mtime > 86400
            if path != keep and (stale or orphan):
                path.unlink()
                removed.append(path)
        except OSError:
            continue
    return removed


def _spark_class_path() -> str:
    """The driver's class path as spark-submit builds it (an archive maps only under the class path it was
    written with)."""
    import pyspark

    home = os.environ.get("SPARK_HOME") or str(Path(pyspark.__file__).parent)
    conf = os.environ.get("SPARK_CONF_DIR") or f"{home}/conf"
    return f"{conf.rstrip('/')}/:{home}/jars/*"


def finish_own(java: str | None) -> Path | None:
    """:func:`finish` the part this process's JVM wrote as it exited; the archive, or None."""
    with contextlib.suppress(OSError):
        for part in cache_dir().glob(f"spark-*.{os.getpid()}.part"):
            if java and finish(java, part):
                return part.with_name(part.name.split(".", 1)[0] + ".jsa")
    return None
