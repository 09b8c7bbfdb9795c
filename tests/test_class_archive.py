"""The driver's class archive: written once, mapped by later JVMs, a torn one never used."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from xray_spark import class_archive as cds
from xray_spark.session import DRIVER_JVM_OPTIONS, java_executable


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XRAY_SPARK_CACHE", str(tmp_path))
    return tmp_path / "jvm"


def test_a_driver_writes_the_archive_when_none_exists_and_maps_it_once_one_does(cache):
    java = java_executable()
    options, part = cds.jvm_options(java, DRIVER_JVM_OPTIONS)
    assert part == cache / f"spark-{cds.archive_key(java, DRIVER_JVM_OPTIONS)}.{os.getpid()}.part"
    assert f"-XX:ArchiveClassesAtExit={part}" in options and "-Xlog:all=warning:stderr" in options
    other = part.with_name(part.name.replace(f".{os.getpid()}.", f".{os.getppid()}."))
    other.write_bytes(b"being written")  # by another driver's JVM, still running: this one neither writes nor maps
    assert cds.jvm_options(java, DRIVER_JVM_OPTIONS) == (cds.LOG_TO_STDERR, None)
    other.unlink()
    final = other.with_name(other.name.split(".", 1)[0] + ".jsa")
    final.write_bytes(b"")
    assert cds.jvm_options(java, DRIVER_JVM_OPTIONS) == (
        f"{cds.LOG_TO_STDERR} -XX:SharedArchiveFile={final}",
        None,
    )
    assert cds.jvm_options(java, DRIVER_JVM_OPTIONS, enabled=False) == (cds.LOG_TO_STDERR, None)


def test_a_jvm_with_an_agent_or_a_flight_recording_never_maps_the_archive(cache, monkeypatch):
    """Java 17 crashes where a class-loading hook meets a mapped dynamic archive: such a JVM starts without one."""
    java = java_executable()
    cache.mkdir()
    (cache / f"spark-{cds.archive_key(java, DRIVER_JVM_OPTIONS)}.jsa").write_bytes(b"")
    assert "SharedArchiveFile" in cds.jvm_options(java, DRIVER_JVM_OPTIONS)[0]
    assert cds.jvm_options(java, DRIVER_JVM_OPTIONS, other="-XX:StartFlightRecording=filename=run.jfr")[1] is None
    assert "SharedArchiveFile" not in cds.jvm_options(java, DRIVER_JVM_OPTIONS, other="-agentlib:jdwp=x")[0]
    monkeypatch.setenv("JAVA_TOOL_OPTIONS", "-javaagent:/opt/apm/agent.jar")
    assert cds.jvm_options(java, DRIVER_JVM_OPTIONS) == (cds.LOG_TO_STDERR, None)


def test_a_torn_archive_is_removed_and_a_whole_one_is_kept(cache, class_archive):
    """A part cut short (its JVM killed while writing) would crash every JVM that maps it: its check fails, it is
    removed, nothing is renamed into place; the run's own archive passes the same check."""
    for _ in range(120):  # another test process may still be writing it
        if class_archive.exists():
            break
        time.sleep(1)
    assert class_archive.exists(), "the product's cache holds no class archive and none could be written there"
    whole = class_archive
    cache.mkdir()
    java = java_executable()
    torn = cache / "spark-0123456789abcdef.1.part"
    with open(whole, "rb") as src:
        torn.write_bytes(src.read(whole.stat().st_size // 3))
    crashed = subprocess.run(
        [java, f"-XX:SharedArchiveFile={torn}", "-Xshare:auto", "-version"], capture_output=True, cwd=cache
    )
    assert crashed.returncode != 0  # what the check spares every later job
    assert not cds.finish(java, torn) and not torn.exists() and not list(cache.glob("*.jsa"))
    assert not list(Path.cwd().glob("hs_err_pid*.log")), "the check's crash report stays out of the working directory"
    kept = cache / "spark-0123456789abcdef.2.part"
    shutil.copyfile(whole, kept)
    assert cds.finish(java, kept) and (cache / "spark-0123456789abcdef.jsa").exists()


def test_archives_of_keys_unused_for_a_month_and_parts_left_by_dead_writers_are_pruned(tmp_path):
    import os
    import time

    from xray_spark.class_archive import STALE_DAYS, prune

    now, day = time.time(), 86400
    ages = {
        "spark-new.jsa": 0,
        "spark-older.jsa": (STALE_DAYS + 10) * day,
        "spark-recent.jsa": 5 * day,
        "spark-gone.999999999.part": 2 * day,
        f"spark-mine.{os.getpid()}.part": 2 * day,
        "spark-fresh.999999999.part": 60,
    }
    for name, age in ages.items():
        (tmp_path / name).write_bytes(b"x")
        os.utime(tmp_path / name, (now - age, now - age))
    removed = prune(tmp_path, keep=tmp_path / "spark-new.jsa")
    assert sorted(p.name for p in removed) == ["spark-gone.999999999.part", "spark-older.jsa"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(set(ages) - {p.name for p in removed})
