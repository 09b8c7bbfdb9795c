"""The train job: a model from ``lake/petastorm/<dataset>`` into ``lake/models/<version>`` and ``xray.models``.

:func:`run_training` plans the run (new, or the newest unfinished one with ``--resume``),
trains on the driver or as a Spark barrier stage, and registers the model with the
SHA-256 digests that scoring and evaluation check.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any

from pyspark.sql import SparkSession

from xray_spark import registry
from xray_spark.config import Settings
from xray_spark.errors import UsageError
from xray_spark.lake import Lake
from xray_spark.lake import store as store_mod
from xray_spark.model_card import MODEL_FILE, PATIENT_DIGEST, patient_digest, read_card, write_card
from xray_spark.train import checkpoints as ckpt
from xray_spark.train.barrier import train_on_spark
from xray_spark.train.loop import train_worker
from xray_spark.train.plan import Cluster, TrainPlan, new_version
from xray_spark.train.verdicts import labelled_store

log = logging.getLogger("xray_spark.train")


def run_training(spark: SparkSession, lake: Lake, settings: Settings, *, resume: bool = False) -> dict[str, Any]:
    """Train a model from ``lake/petastorm/<dataset>``; returns the run's summary.

    The model lands in ``lake/models/<version>/`` and a row in ``xray.models``.
    """
    lake.require_local("train", "writes checkpoints with local file APIs")
    started = time.monotonic()
    plan = make_plan(lake, settings, resume=resume)
    extra: dict[str, Any] = {}
    if plan.train.init_weights == "champion":
        champion = champion_weights(spark, lake, plan)
        plan = dataclasses.replace(plan, train=dataclasses.replace(plan.train, init_weights=champion["path"]))
        extra["fine_tuned_from"] = champion["version"]
    if settings.train.verdicts:
        extra["verdicts"] = labelled_store(spark, lake, settings, plan.labels, plan.version)
        plan = dataclasses.replace(plan, store_url=extra["verdicts"]["store_url"])
    n = plan.train.num_workers
    if n > 1:
        store_mod.check_shardable(plan.store_url, n)
    ckpt.write_plan(plan)
    reports = [train_worker(plan, Cluster())] if n == 1 else train_on_spark(spark, plan, n)
    meta = reports[0]["result"]
    record_training_patients(spark, plan)
    registry.record_model(spark, lake, read_card(plan.model_dir), dataset=plan.dataset)
    return summarise(plan, meta, reports, started) | extra


def record_training_patients(spark: SparkSession, plan: TrainPlan) -> None:
    """Write into model.json the digests of the patients the model was trained on (before its digest is recorded):
    a challenge refuses a model judged on films of its own training patients."""
    from pyspark.sql import functions as F

    store = spark.read.parquet(plan.store_url).where(F.col("split") == "train").select("patient_id").distinct()
    patients = sorted({patient_digest(plan.dataset, r["patient_id"]) for r in store.collect()})
    meta = read_card(plan.model_dir).meta
    write_card(plan.model_dir, meta | {"training_patients": {"digest": PATIENT_DIGEST, "patients": patients}})


def champion_weights(spark: SparkSession, lake: Lake, plan: TrainPlan) -> dict[str, str]:
    """The champion's model file, to start from: it must be the same model, labels and image size."""
    holder = registry.alias_holder(spark, lake, registry.CHAMPION)
    if holder is None:
        raise UsageError("train.init_weights=champion, but no model is champion yet: promote one first")
    card = registry.resolve_model(spark, lake, version=holder["version"])
    mine = (plan.train.model, list(plan.labels), plan.image_size)
    theirs = (card.kind, list(card.labels), card.size)
    if mine != theirs:
        raise UsageError(
            f"the champion {card.version} is {theirs[0]} on {len(theirs[1])} labels at {theirs[2]} px; this run trains "
            f"{mine[0]} on {len(mine[1])} labels at {mine[2]} px: fine-tuning needs the same model, labels and size"
        )
    log.info("fine-tuning from the champion %s", card.version)
    return {"version": card.version, "path": os.path.join(card.path, MODEL_FILE)}


def make_plan(lake: Lake, settings: Settings, *, resume: bool) -> TrainPlan:
    """A new run's plan, or with ``resume`` the newest unfinished run of the same model and dataset."""
    manifest = store_mod.require_manifest(lake, settings.dataset)
    previous = resumable(lake.path("models"), settings.train.model, settings.dataset) if resume else None
    if resume and previous is None:
        log.info("nothing to resume for %s on %s: starting a new run", settings.train.model, settings.dataset)
    version, train = new_version(settings.train.model), settings.train
    if previous is not None:
        log.info("resuming %s", previous.version)
        version, train = previous.version, dataclasses.replace(previous.train, epochs=settings.train.epochs)
    return TrainPlan(
        store_url=lake.store_url(settings.dataset),
        dataset=settings.dataset,
        labels=list(manifest.labels),
        image_size=manifest.image_size,
        model_dir=os.path.join(lake.path("models"), version),
        version=version,
        train=train,
        resume=previous is not None,
        thresholds=settings.thresholds,
    )


def resumable(models_dir: str, model: str, dataset: str) -> TrainPlan | None:
    """The plan of the newest unfinished run of ``model`` on ``dataset``, if any."""
    if not os.path.isdir(models_dir):
        return None
    for version in sorted(os.listdir(models_dir), reverse=True):
        state = ckpt.read_state(os.path.join(models_dir, version))
        plan = ckpt.read_plan(os.path.join(models_dir, version))
        if state is None or state.get("finished") or plan is None:
            continue
        if plan.train.model == model and plan.dataset == dataset:
            return plan
    return None


def summarise(plan: TrainPlan, meta: dict[str, Any], reports: list[dict[str, Any]], started: float) -> dict[str, Any]:
    worker_keys = ("rank", "steps_per_epoch", "final_weights_digest", "seconds", "on_gpu")
    return {
        "version": plan.version,
        "model_dir": plan.model_dir,
        "model_file": os.path.join(plan.model_dir, MODEL_FILE),
        "model": meta["model"],
        "labels": meta["labels"],
        "val_auroc": meta["val_auroc"],
        "val_auroc_mean": meta["val_auroc_mean"],
        "thresholds": meta["thresholds"],
        "operating_points": meta["operating_points"],
        "best_epoch": meta["best_epoch"],
        "epochs_run": meta["epochs_run"],
        "num_workers": plan.train.num_workers,
        "workers": [{k: r[k] for k in worker_keys} | {"train_rows": len(r["train_ids"])} for r in reports],
        "seconds": round(time.monotonic() - started, 1),
    }
