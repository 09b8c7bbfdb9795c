"""The driver JVM's class archive: written once by a job whose JVM exits cleanly, mapped by the next jobs, never a
reason for a job to fail."""

from __future__ import annotations

import os
import subprocess
import sys

from xray_spark.jvm_archive import QUIET, class_archive
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


def test_off_or_an_unwritable_folder_means_no_archive_and_no_failure(tmp_path):
    assert class_archive("off", JAVA).options == ""
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    assert class_archive(str(blocked / "jvm"), JAVA).writing is None


def test_the_next_job_maps_the_archive_the_first_one_wrote(tmp_path):
    """A job run as cron runs it writes the archive as its JVM exits; the next job's JVM is started with
    ``-Xshare:on`` (which refuses to start when an archive it is given cannot be mapped) and answers."""
    sets = ["--set", f"spark.class_archive={tmp_path / 'jvm'}", "--set", "spark.driver_memory=1g"]
    args = ["--lake", str(tmp_path / "lake"), *sets, "--format", "csv", "SELECT 40 + 2 AS answer"]
    first = subprocess.run(job_command("sql", args), env=job_env(), capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    (archive,) = (tmp_path / "jvm").glob("*.jsa")
    assert archive.stat().st_size > 1_000_000 and not list((tmp_path / "jvm").glob("*.writing"))
    strict = job_env({"JAVA_TOOL_OPTIONS": "-Xshare:on"})
    second = subprocess.run(job_command("sql", args), env=strict, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.splitlines() == ["answer", "42"], "stdout: the data only, the JVM's words on stderr"
    assert list((tmp_path / "jvm").iterdir()) == [archive], "mapped, not written again"
