"""Training on Spark: two barrier workers agree and split the rows, a failing worker fails the stage with its own
error, an interrupted run resumes from its checkpoint."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from xray_spark.lake import Lake

from .conftest import make_settings
from .jobs import kill_when


def test_two_barrier_workers_agree_and_split_the_train_rows(spark, prepared):
    settings, lake, _ = prepared
    import dataclasses

    from xray_spark.lake.store import read_manifest
    from xray_spark.train.barrier import train_on_spark
    from xray_spark.train.plan import TrainPlan

    manifest = read_manifest(lake, settings.dataset)
    train = dataclasses.replace(settings.train, epochs=2, num_workers=2, eval_max_rows=50)
    plan = TrainPlan(
        store_url=lake.store_url(settings.dataset),
        dataset=settings.dataset,
        labels=manifest.labels,
        image_size=manifest.image_size,
        model_dir=str(Path(lake.root) / "models" / "two-workers"),
        version="two-workers",
        train=train,
    )
    reports = train_on_spark(spark, plan, 2)
    assert [r["rank"] for r in reports] == [0, 1]
    assert reports[0]["final_weights_digest"] == reports[1]["final_weights_digest"]
    assert reports[0]["steps_per_epoch"] == reports[1]["steps_per_epoch"]
    ids0, ids1 = set(reports[0]["train_ids"]), set(reports[1]["train_ids"])
    assert ids0 and ids1 and not ids0 & ids1, "the shards are disjoint"
    store_train = {
        r["image_id"]
        for r in spark.read.parquet(lake.store_url(settings.dataset))
        .where(F.col("split") == "train")
        .select("image_id")
        .collect()
    }
    assert ids0 | ids1 == store_train, "together they cover the train split"
    assert (Path(plan.model_dir) / "model.keras").exists()


def test_interrupted_training_resumes_from_its_checkpoint(spark, prepared, tmp_path):
    _, lake, _ = prepared
    lake_dir = tmp_path / "lake"
    lake_dir.mkdir()
    os.symlink(Path(lake.root) / "petastorm", lake_dir / "petastorm")  # the same store, a lake of its own
    args = ["--lake", lake_dir, "--epochs", "30", "--set", "spark.driver_memory=1g", "--set", "train.eval_max_rows=50"]

    def two_epochs_checkpointed() -> bool:
        found = list((lake_dir / "models").glob("*/checkpoints/state.json"))
        return bool(found) and json.loads(found[0].read_text())["epoch"] >= 2

    kill_when("train", args, two_epochs_checkpointed, what="its second checkpoint")
    state_files = list((lake_dir / "models").glob("*/checkpoints/state.json"))
    interrupted = json.loads(state_files[0].read_text())
    assert not interrupted["finished"] and not (state_files[0].parents[1] / "model.keras").exists()
    version = state_files[0].parents[1].name

    from xray_spark.train.pipeline import run_training

    resumed_settings = make_settings(lake_dir, f"train.epochs={interrupted['epoch'] + 1}", "train.eval_max_rows=50")
    summary = run_training(spark, Lake.at(str(lake_dir)), resumed_settings, resume=True)
    assert summary["version"] == version
    state = json.loads(state_files[0].read_text())
    assert state["finished"] and state["epoch"] == interrupted["epoch"] + 1
    assert [r["epoch"] for r in state["history"]] == list(range(1, state["epoch"] + 1))
    assert state["history"][: interrupted["epoch"]] == interrupted["history"]
    from xray_spark.models import load_model_safely

    assert load_model_safely(summary["model_file"]).output_shape == (None, 14)


def test_a_failing_worker_fails_the_stage_with_its_own_error(spark, prepared, tmp_path):
    import dataclasses

    from xray_spark.errors import XraySparkError
    from xray_spark.lake.store import read_manifest
    from xray_spark.train.barrier import train_on_spark
    from xray_spark.train.plan import TrainPlan

    settings, lake, _ = prepared
    manifest = read_manifest(lake, settings.dataset)
    train = dataclasses.replace(
        settings.train, epochs=1, num_workers=2, init_weights=str(tmp_path / "no-such.weights.h5")
    )
    plan = TrainPlan(
        store_url=lake.store_url(settings.dataset),
        dataset=settings.dataset,
        labels=manifest.labels,
        image_size=manifest.image_size,
        model_dir=str(tmp_path / "model"),
        version="failing",
        train=train,
    )
    started = time.monotonic()
    with pytest.raises(XraySparkError, match=r"a training worker failed: .*could not load weights from .*no-such"):
        train_on_spark(spark, plan, 2)
    assert time.monotonic() - started < 300, "a failure must not wait out a collective timeout"
