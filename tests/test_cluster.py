"""The jobs on a real Spark standalone cluster (a master and two one-core workers on 127.0.0.1).

The same job scripts as in local mode, pointed at ``spark://127.0.0.1:PORT`` with
``conf/standalone.yaml``; their results are compared with local mode's on the same input.
One worker is killed while the cluster's ``score`` runs; SQL then runs on the other.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from pyspark.sql import functions as F

from xray_spark.dev import cluster as cluster_mod
from xray_spark.lake import Lake, tables
from xray_spark.registry import register_model
from xray_spark.score.pipeline import run_scoring

from .conftest import ROOT, TEST_OVERRIDES, make_settings
from .jobs import checked, job_command, job_env, run_job

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    started = cluster_mod.start(tmp_path_factory.mktemp("cluster"), workers=2, cores=1, memory="2g")
    yield started
    stopped = cluster_mod.stop(started.state_dir)
    assert "master" in stopped


def on_cluster(cluster: cluster_mod.LocalCluster, lake_dir: Path, *extra: str) -> list[str]:
    overrides = [*TEST_OVERRIDES, f"spark.master={cluster.master_url}", "spark.driver_memory=1g"]
    args = ["--config", str(ROOT / "conf" / "standalone.yaml"), "--lake", str(lake_dir)]
    for item in overrides:
        args += ["--set", item]
    return [*args, *extra]


def _summary(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def cluster_run(cluster, archive, tmp_path_factory):
    """synthesize (the session's archive) -> prepare -> train (2 barrier workers) -> score, all on the cluster; one
    worker is killed (SIGKILL) while score runs, once a task of its executor has started Python workers, and the job
    must finish on the other (one scoring run of the cluster's serves both: a second cost a whole application)."""
    lake_dir = tmp_path_factory.mktemp("cluster_lake")
    out = tmp_path_factory.mktemp("cluster_summaries")
    inputs = ["--metadata", archive / "Data_Entry_2017.csv", "--images", archive / "images"]
    checked(run_job("prepare", on_cluster(cluster, lake_dir, *map(str, inputs), "--summary-json", str(out / "p.json"))))
    train_args = ["--epochs", "2", "--set", "train.num_workers=2", "--set", "train.eval_max_rows=50"]
    checked(run_job("train", on_cluster(cluster, lake_dir, *train_args, "--summary-json", str(out / "t.json"))))
    trained = _summary(out / "t.json")
    score_args = ["--model", trained["model_dir"], "--batch-size", "4", "--summary-json", str(out / "s.json")]
    killed = _score_killing_a_worker(cluster, on_cluster(cluster, lake_dir, *score_args))
    return {
        "lake": Lake.at(str(lake_dir)),
        "prepare": _summary(out / "p.json"),
        "train": trained,
        "score": _summary(out / "s.json"),
        "killed": killed,
    }


def _store_rows(spark, store_url: str) -> set[tuple]:
    digest = F.udf(lambda b: hashlib.sha256(bytes(b)).hexdigest())
    df = spark.read.parquet(store_url).select(
        "image_id",
        "patient_id",
        "split",
        "finding_labels",
        F.hex("labels").alias("labels"),
        digest("image").alias("px"),
    )
    return {tuple(r) for r in df.collect()}


def test_the_cluster_ran_the_work(cluster, cluster_run):
    for worker in cluster.workers:
        apps = list(cluster.work_dir(worker).glob("app-*"))
        assert len(apps) >= 3, f"{worker.role} ran executors for only {len(apps)} applications"
    assert [cluster_mod.is_running(w) for w in cluster.workers] == [False, True], "only the killed worker is gone"


def test_prepare_on_the_cluster_equals_local_mode(spark, prepared, cluster_run):
    settings, local_lake, local_summary = prepared
    on_cluster_summary = cluster_run["prepare"]
    assert on_cluster_summary["store_rows"] == local_summary["store_rows"] == 160
    assert on_cluster_summary["splits"] == local_summary["splits"]
    assert on_cluster_summary["label_set"] == local_summary["label_set"]
    local_rows = _store_rows(spark, local_lake.store_url(settings.dataset))
    assert _store_rows(spark, cluster_run["lake"].store_url(settings.dataset)) == local_rows, (
        "same ids, patients, splits, labels and pixels"
    )


def test_training_on_the_cluster_used_two_workers_that_agree(cluster_run):
    trained = cluster_run["train"]
    assert trained["num_workers"] == 2
    workers = trained["workers"]
    assert len({w["final_weights_digest"] for w in workers}) == 1, "both replicas end with the same weights"
    assert sum(w["train_rows"] for w in workers) == cluster_run["prepare"]["splits"]["train"]["images"]
    assert Path(trained["model_file"]).exists()


def test_predictions_on_the_cluster_equal_local_mode(spark, cluster_run, tmp_path):
    lake = cluster_run["lake"]
    local_root = tmp_path / "lake"
    local_root.mkdir()
    os.symlink(Path(lake.root) / "petastorm", local_root / "petastorm")
    local_lake = Lake.at(str(local_root))
    # The cluster's model enters this lake the documented way for a model trained elsewhere.
    registered = register_model(spark, local_lake, cluster_run["train"]["model_dir"], dataset="nih")
    run_scoring(spark, local_lake, make_settings(local_root), model_version=registered["version"])
    local = _probabilities(spark, local_lake)
    remote = _probabilities(spark, lake)
    assert sorted(local) == sorted(remote) and len(local) == 160
    worst = max(float(np.abs(local[k] - remote[k]).max()) for k in local)
    assert worst < 1e-5, f"cluster and local predictions differ by up to {worst}"


def _probabilities(spark, lake: Lake, run_id: str | None = None) -> dict[str, np.ndarray]:
    tables.register_tables(spark, lake)
    df = spark.table("xray.predictions")
    if run_id:
        df = df.where(F.col("run_id") == run_id)
    columns = sorted(c for c in df.columns if c.startswith("p_"))
    assert len(columns) == 14
    rows = df.select("image_id", *columns).collect()
    assert len(rows) == len({r.image_id for r in rows}), "one row per study"
    return {r.image_id: np.asarray([r[c] for c in columns], dtype=np.float64) for r in rows}


def test_sql_on_the_cluster_equals_local_mode(spark, cluster, cluster_run):
    lake = cluster_run["lake"]
    query = (
        "SELECT s.split, COUNT(*) AS n, ROUND(AVG(p.top_probability), 6) AS mean_top "
        "FROM xray.latest_predictions p JOIN xray.studies s USING (image_id) GROUP BY s.split ORDER BY s.split"
    )
    result = checked(run_job("sql", [*on_cluster(cluster, Path(lake.root)), "--format", "json", query]))
    on_cluster_rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    tables.register_tables(spark, lake)
    local_rows = [r.asDict() for r in spark.sql(query).collect()]
    assert on_cluster_rows == local_rows
    assert sum(r["n"] for r in local_rows) == 160


# -- faults ------------------------------------------------------------------------------------
def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _runs_python_task(worker_pid: int, before: set[str]) -> bool:
    """True once an executor of an application not in ``before`` runs under this worker and has started Python
    workers (a task of that application is underway; the Python of an earlier application's ending executor does
    not count; the executor's own command line names pyspark's jars, so it is its children that tell)."""
    tree = cluster_mod.process_tree(worker_pid)[1:]
    executors = [p for p in tree if b"CoarseGrainedExecutorBackend" in _cmdline(p)]
    new = [p for p in executors if not any(app.encode() in _cmdline(p) for app in before)]
    return any(b"python" in _cmdline(c) for p in new for c in cluster_mod.process_tree(p)[1:])


def _score_killing_a_worker(cluster: cluster_mod.LocalCluster, args: list[str]) -> dict:
    """Run score on the cluster and SIGKILL its first worker once a task runs Python there; the job must exit 0.
    How long it went on after the kill."""
    victim = cluster.workers[0]
    before = {app.name for app in cluster.work_dir(victim).glob("app-*")}
    proc = subprocess.Popen(
        job_command("score", args),
        env=job_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not _runs_python_task(victim.pid, before):
            assert proc.poll() is None, "score ended before a task ran on the worker to kill"
            assert time.monotonic() < deadline, "no task reached the worker to kill within 240 s"
            time.sleep(0.05)
        os.kill(victim.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        _, stderr = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, stderr[-3000:]
    return {"after_kill_seconds": time.monotonic() - killed_at}


def test_a_killed_worker_loses_no_prediction(spark, cluster, cluster_run):
    """SIGKILL one worker while score runs (the fixture's scoring): the job finishes on the other, one row per study
    (the probabilities equal local mode's: test_predictions_on_the_cluster_equal_local_mode)."""
    assert not cluster_mod.is_running(cluster.workers[0])
    summary = cluster_run["score"]
    assert summary["written"] == 160
    scored = _probabilities(spark, cluster_run["lake"], summary["run_id"])
    assert len(scored) == 160
    print(f"score finished {cluster_run['killed']['after_kill_seconds']:.0f} s after the worker was killed")


# -- the cluster's own bookkeeping (no cluster needed) --------------------------------------------
def test_down_stops_only_the_processes_up_started(tmp_path):
    ours = subprocess.Popen(["sleep", "60"])
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        record = cluster_mod.LocalCluster(
            state_dir=str(tmp_path),
            master_url="spark://127.0.0.1:1",
            web_url="http://127.0.0.1:1",
            cores_per_worker=1,
            memory_per_worker="1g",
            processes=[
                cluster_mod.Process("worker-1", ours.pid, cluster_mod._start_time(ours.pid), "", 0),
                # The pid was recorded for a process that has ended; the number now belongs to another.
                cluster_mod.Process("master", stranger.pid, cluster_mod._start_time(stranger.pid) - 1, "", 0),
            ],
        )
        record.save()
        assert cluster_mod.stop(tmp_path) == ["worker-1"]
        assert ours.wait(timeout=10) == -signal.SIGTERM
        assert stranger.poll() is None, "a process up did not start is left alone"
        assert cluster_mod.LocalCluster.load(tmp_path) is None
    finally:
        stranger.kill()
        ours.kill()
