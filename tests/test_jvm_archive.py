"""The driver JVM's class archive: written once by a job whose JVM exits cleanly, mapped by the next jobs, never a
reason for a job to fail."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from xray_spark.jvm_archive import QUIET, archive_key, class_archive, spark_jars
from xray_spark.session import java_executable

from .jobs import job_command, job_env

JAVA = java_executable() or "java"


def test_one_writer_at_a_time_and_the_archive_named_only_after_a_clean_exit(tmp_path):
    folder = str(tmp_path / "jvm")
    writer = class_archive(folder, JAVA)
    assert writer.writing is not None and f"-XX:ArchiveClassesAtExit={writer.writing}" in writer.options
    other = class_archive(folder, JAVA)
    assert other.writing is None and other.options == QUIET, "a second job while the first writes: no archive"
    writer.writing.write_bytes(b"a JVM's archive")
    writer.finish(clean_exit=True)
    mapped = class_archive(folder, JAVA)
    (archive,) = (tmp_path / "jvm").glob("*.jsa")
    assert mapped.options == f"-XX:SharedArchiveFile={archive} {QUIET}" and mapped.writing is None
    assert not list((tmp_path / "jvm").glob("*.claim")) and not list((tmp_path / "jvm").glob("*.writing"))


def test_another_spark_or_virtual_environment_has_an_archive_of_its_own(tmp_path, monkeypatch):
    """The JVM refuses an archive recorded with another class path: each Spark's jars folder gets its own."""
    here = archive_key(JAVA)
    jars = tmp_path / "spark" / "jars"
    jars.mkdir(parents=True)
    for jar in (spark_jars() or tmp_path).glob("*.jar"):
        (jars / jar.name).symlink_to(jar)  # the same jars, in another place
    monkeypatch.setenv("SPARK_HOME", str(tmp_path / "spark"))
    assert archive_key(JAVA) != here


def test_a_killed_writer_leaves_no_archive_and_its_claim_passes_on(tmp_path):
    folder = str(tmp_path / "jvm")
    killed = class_archive(folder, JAVA)
    assert killed.writing is not None and killed.claim is not None
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    half = killed.writing.with_name(killed.writing.name.replace(f".{os.getpid()}.", f".{dead.pid}."))
    half.write_bytes(b"half an archive")
    killed.claim.write_text(f"{dead.pid}\n")  # its process is gone: the claim is stale
    taken = class_archive(folder, JAVA)
    assert taken.writing is not None and not half.exists(), "claimed again, and what the dead one wrote removed"
    taken.finish(clean_exit=False)  # a JVM stopped by a signal: what it wrote is not an archive
    assert not list((tmp_path / "jvm").iterdir())


def test_off_an_unwritable_folder_or_a_java_agent_means_no_archive_and_no_failure(tmp_path, monkeypatch):
    assert class_archive("off", JAVA).options == ""
    # Java 17 crashes where a class-file hook (an agent, a flight recording) meets a mapped dynamic archive
    recording = "-XX:StartFlightRecording=filename=run.jfr"
    assert class_archive(str(tmp_path / "jvm"), JAVA, jvm_options=recording).options == ""
    monkeypatch.setenv("JAVA_TOOL_OPTIONS", "-javaagent:/opt/apm/agent.jar")
    assert class_archive(str(tmp_path / "jvm"), JAVA).options == ""
    monkeypatch.delenv("JAVA_TOOL_OPTIONS")
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    assert class_archive(str(blocked / "jvm"), JAVA).writing is None


def test_the_launcher_prints_only_data_and_writes_the_archive_the_next_job_maps(tmp_path):
    """``xray-spark sql`` under spark-submit with the package's log4j file: the query's result on stdout, no Spark
    INFO line on stderr (a plain spark-submit prints about 40); its JVM writes the class archive as it exits. The
    next job, as cron runs it, starts its JVM with ``-Xshare:on`` (which refuses to start when an archive it is
    given cannot be mapped) and answers."""
    launcher = Path(sys.executable).parent / "xray-spark"
    command = [str(launcher)] if launcher.exists() else [sys.executable, "-m", "xray_spark.launch"]
    sets = ["--set", f"spark.class_archive={tmp_path / 'jvm'}", "--set", "spark.driver_memory=1g"]
    args = ["--lake", str(tmp_path / "lake"), *sets, "--format", "csv", "SELECT 40 + 2 AS answer"]
    first = subprocess.run(
        [*command, "--master", "local[1]", "sql", *args], env=job_env(), capture_output=True, text=True, timeout=300
    )
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.splitlines() == ["answer", "42"]
    spark_info = [line for line in first.stderr.splitlines() if " INFO " in line and " xray_spark" not in line]
    assert not spark_info, first.stderr[:2000]
    (archive,) = (tmp_path / "jvm").glob("*.jsa")
    assert archive.stat().st_size > 1_000_000 and not list((tmp_path / "jvm").glob("*.writing"))
    strict = job_env({"JAVA_TOOL_OPTIONS": "-Xshare:on"})
    second = subprocess.run(job_command("sql", args), env=strict, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.splitlines() == ["answer", "42"], "stdout: the data only, the JVM's words on stderr"
    assert list((tmp_path / "jvm").iterdir()) == [archive], "mapped, not written again"
