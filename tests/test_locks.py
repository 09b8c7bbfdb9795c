"""One writer at a time: lake locks, their release, takeover of a dead owner's, and the jobs that take them."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from xray_spark import locks
from xray_spark.errors import LockBusy
from xray_spark.lake import Lake, tables
from xray_spark.lake.store import read_manifest
from xray_spark.prepare import PrepareInputs, run_prepare
from xray_spark.score.pipeline import run_scoring

from .conftest import make_settings
from .jobs import job_command, job_env
from .lakes import copy_lake


def test_a_second_holder_is_refused_in_one_line_and_the_lock_is_released_on_error(tmp_path):
    lake = Lake.at(str(tmp_path))
    with locks.lake_lock(lake, "score-v1", job="score") as owner:
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
        busy = pytest.raises(LockBusy, match=rf"pid {os.getpid()} on host .* holds .*score-v1.lock")
        with busy as info, locks.lake_lock(lake, "score-v1", job="score"):
            pass
        assert "\n" not in str(info.value)
    with pytest.raises(RuntimeError), locks.lake_lock(lake, "score-v1", job="score"):
        raise RuntimeError("the run failed")
    assert not (tmp_path / "locks" / "score-v1.lock").exists(), "released on every exit path"


def test_a_waiting_run_gets_the_lock_when_the_first_one_ends(tmp_path):
    lake = Lake.at(str(tmp_path))
    holding = threading.Event()

    def first() -> None:
        with locks.lake_lock(lake, "prepare-nih", job="prepare"):
            holding.set()
            time.sleep(1.5)

    thread = threading.Thread(target=first)
    thread.start()
    holding.wait(10)
    started = time.monotonic()
    with locks.lake_lock(lake, "prepare-nih", job="prepare", wait_seconds=30):
        waited = time.monotonic() - started
    thread.join()
    assert 0.5 < waited < 30


@pytest.mark.parametrize("owner", ["dead pid", "reused pid", "never written"])
def test_a_lock_whose_owner_is_provably_dead_is_taken_over(tmp_path, owner):
    lake = Lake.at(str(tmp_path))
    path = tmp_path / "locks" / "score-v1.lock"
    path.parent.mkdir()
    record = locks.owner_record("score")
    if owner == "dead pid":
        child = subprocess.Popen([sys.executable, "-c", "pass"])
        child.wait()
        record["pid"] = child.pid
    elif owner == "reused pid":
        record["process_start"] = record["process_start"] - 1  # our pid, but another process's start
    path.write_text("" if owner == "never written" else json.dumps(record))
    if owner == "never written":
        old = time.time() - 2 * locks.UNWRITTEN_STALE_S
        os.utime(path, (old, old))
    with locks.lake_lock(lake, "score-v1", job="score") as mine:
        assert json.loads(path.read_text())["token"] == mine["token"]


def test_a_live_owner_on_another_host_is_never_taken_over(tmp_path):
    lake = Lake.at(str(tmp_path))
    path = tmp_path / "locks" / "score-v1.lock"
    path.parent.mkdir()
    record = locks.owner_record("score") | {"host": "another-node", "pid": 1}
    path.write_text(json.dumps(record))
    with pytest.raises(LockBusy, match="pid 1 on host another-node"), locks.lake_lock(lake, "score-v1", job="score"):
        pass
    assert json.loads(path.read_text()) == record


def test_prepare_and_score_take_their_locks(spark, prepared, small_model, archive, tmp_path):
    settings, lake = copy_lake(prepared, tmp_path / "lake")
    inputs = PrepareInputs(str(archive / "Data_Entry_2017.csv"), str(archive / "images"), incremental=True)
    with locks.lake_lock(lake, "prepare-nih", job="prepare"), pytest.raises(LockBusy, match=r"prepare-nih\.lock"):
        run_prepare(spark, lake, settings, inputs)
    version = small_model["version"]
    with locks.lake_lock(lake, f"score-{version}", job="score"), pytest.raises(LockBusy, match=rf"score-{version}"):
        run_scoring(spark, lake, settings, model_version=version, new_only=True)
    run_prepare(spark, lake, settings, inputs)  # free again: runs, adds nothing, and is recorded
    assert len(read_manifest(lake, "nih").runs) == 2, "the manifest records every run"


@pytest.mark.slow
def test_two_nightly_scoring_runs_at_once_score_each_study_once(spark, prepared, small_model, tmp_path):
    """The reproduction: two `score --new-only` started together on one lake."""
    _, lake = copy_lake(prepared, tmp_path / "lake")
    args = ["--lake", lake.root, "--new-only", "--set", "spark.driver_memory=1g", "--set", "locks.wait_seconds=600"]
    procs = [
        subprocess.Popen(
            job_command("score", [*args, "--summary-json", str(tmp_path / f"run{i}.json")]),
            env=job_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    errors = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for e in errors]
    written = sorted(json.loads((tmp_path / f"run{i}.json").read_text())["written"] for i in range(2))
    assert written == [0, 160], "the second run waited, then found nothing new"
    tables.register_tables(spark, lake)
    counts = spark.table("xray.predictions").groupBy("image_id").count()
    assert counts.count() == 160 and counts.where("count > 1").count() == 0


def test_score_never_reads_a_store_while_a_full_run_swaps_it(spark, prepared, small_model, tmp_path):
    settings, lake = copy_lake(prepared, tmp_path / "lake")
    with (
        locks.store_replacer(lake, "nih", job="prepare"),
        pytest.raises(LockBusy, match=r"^store 'nih' is being replaced by a full prepare run, pid \d+"),
    ):
        run_scoring(spark, lake, settings, model_version=small_model["version"], new_only=True)
    assert not (Path(lake.root) / "tables" / "predictions").exists(), "nothing was scored"


def test_a_full_run_waits_for_the_stores_readers_then_swaps(prepared, tmp_path):
    _, lake = copy_lake(prepared, tmp_path / "lake")
    order: list[str] = []
    reading = threading.Event()

    def reader() -> None:
        with locks.store_reader(lake, "nih", job="score"):
            reading.set()
            time.sleep(2)
            order.append("read")

    thread = threading.Thread(target=reader)
    thread.start()
    reading.wait(10)
    with locks.store_replacer(lake, "nih", job="prepare"):
        order.append("swap")
    thread.join(10)
    assert order == ["read", "swap"]
    with (
        pytest.raises(LockBusy, match="is still read by score run, pid"),
        locks.store_reader(lake, "nih", job="score"),
        locks.store_replacer(lake, "nih", job="prepare", wait_seconds=0.5),
    ):
        pass


def test_two_datasets_prepared_at_once_keep_every_shared_row(spark, tmp_path):
    """siteA and siteB at the same time, twice: every quarantine row, both stores and both studies partitions."""
    from . import corpus

    root = corpus.make_bad_archive(tmp_path / "bad")
    lake_dir = tmp_path / "lake"
    lake = Lake.at(str(lake_dir))
    inputs = PrepareInputs(metadata=str(root / "Data_Entry_2017.csv"), images=str(root / "images"))
    errors: list[BaseException] = []

    def prepare(dataset: str, round_: int) -> None:
        settings = make_settings(lake_dir, f"dataset={dataset}", "quarantine.max_fraction=1.0")
        try:
            run_prepare(spark, lake, settings, dataclasses.replace(inputs, replace=round_ > 0))
        except BaseException as exc:
            errors.append(exc)

    per_run = sum(len(v) for v in corpus.EXPECTED_REASONS.values())
    for round_ in range(2):
        threads = [threading.Thread(target=prepare, args=(d, round_)) for d in ("siteA", "siteB")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(600)
        assert not errors, errors
        quarantine = spark.read.parquet(lake.table_url("quarantine"))
        studies = spark.read.parquet(lake.table_url("studies"))
        for dataset in ("siteA", "siteB"):
            assert quarantine.where(F.col("dataset") == dataset).count() == per_run * (round_ + 1), (round_, dataset)
            stored = spark.read.parquet(lake.store_url(dataset)).count()
            assert stored == len(corpus.GOOD) and studies.where(F.col("dataset") == dataset).count() == stored
