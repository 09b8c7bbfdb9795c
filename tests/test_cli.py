"""The jobs' command line: one line and an exit status for Ctrl-C, a full disk, a lake that cannot be one, a late
nightly delivery."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from xray_spark.lake import Lake

from .conftest import ROOT
from .jobs import job_command, job_env, run_in_process, run_job
from .lakes import copy_lake


def test_nightly_without_tonights_csv_fails_in_one_line_and_writes_nothing(tmp_path):
    venv = tmp_path / "venv"  # stands in for .venv, so make does not install anything
    (venv / "bin").mkdir(parents=True)
    os.symlink(sys.executable, venv / "bin" / "python")
    (venv / ".installed").touch()
    incoming = tmp_path / "incoming" / "20261126"
    (incoming / "images").mkdir(parents=True)
    lake = tmp_path / "lake"
    result = subprocess.run(
        ["make", "-s", "nightly", f"VENV={venv}", f"LAKE={lake}", f"INCOMING={incoming}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("nightly: error:")]
    assert len(errors) == 1 and "Data_Entry_2017.csv has not arrived" in errors[0], result.stderr
    assert not lake.exists(), "nothing was written into the lake"
    assert sorted(p.name for p in incoming.iterdir()) == ["images"], "no synthetic archive was made"


def test_ctrl_c_during_a_query_exits_130_in_one_line(prepared, tmp_path):
    _, lake = copy_lake(prepared, tmp_path / "lake")
    query = "SELECT sum(a.id * b.id) FROM range(200000) a CROSS JOIN range(200000) b"
    proc = subprocess.Popen(
        job_command("sql", ["--lake", lake.root, "--set", "spark.driver_memory=1g", query]),
        env=job_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if "settings that differ from the defaults" in line:
            break
    time.sleep(12)  # the session starts and the query runs
    assert proc.poll() is None, "the query finished before Ctrl-C"
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    _, rest = proc.communicate(timeout=120)
    stderr = "".join(lines) + rest
    assert proc.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr and "py4j" not in stderr, stderr[-3000:]
    assert [line for line in stderr.splitlines() if line.startswith("sql: ")] == [
        "sql: interrupted by SIGINT: stopped, nothing partial published"
    ]


def test_a_lake_that_cannot_be_one_is_refused_in_one_line_before_spark(tmp_path):
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("x")
    for lake, said in ((a_file, "is a file, not a folder"), (tmp_path / "lakes" / "site#2", "holds '#' or '?'")):
        result = run_job("score", ["--lake", str(lake)], cwd=tmp_path)
        errors = [line for line in result.stderr.splitlines() if line.startswith("score: ")]
        assert result.returncode == 2 and len(errors) == 1 and said in errors[0], result.stderr[-2000:]
    space = tmp_path / "lakes" / "site 2 é"
    assert Lake.at(str(space)).root == str(space), "spaces and letters beyond ASCII are fine"


@contextlib.contextmanager
def _small_disk(folder: Path, size: str):
    """A tmpfs of ``size`` mounted at ``folder`` for the block (skipped where mounting is not allowed)."""
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode(errors='replace').strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_full_disk_is_one_line_the_lock_is_released_and_the_rerun_works(spark, tmp_path):
    from xray_spark.dev.synthetic import write_archive

    archive = tmp_path / "archive"
    write_archive(archive, n_images=40, size=96, seed=11)  # a 100 KiB disk fills in its first write
    with _small_disk(tmp_path / "disk", "100k") as disk:
        args = ["--lake", str(disk / "lake"), "--metadata", str(archive / "Data_Entry_2017.csv")]
        args += ["--images", str(archive / "images"), "--set", "image.size=64", "--set", "spark.driver_memory=1g"]
        full = run_job("prepare", args, cwd=tmp_path)
        lines = [line for line in full.stderr.splitlines() if line.startswith("prepare: ")]
        assert full.returncode == 1 and len(lines) == 1 and "a disk is full: No space left on device" in lines[0]
        assert "Traceback" not in full.stderr and len(full.stderr.splitlines()) < 40, full.stderr[-3000:]
        assert not list((disk / "lake" / "locks").glob("*.lock")), "the lock was released"
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        again = run_in_process("prepare", args)  # the failed job's process is gone: nothing of it stays in this one
        assert again.returncode == 0, again.stderr[-3000:]
