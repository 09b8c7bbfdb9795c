"""The score job: per-image finding probabilities for the store's studies, into ``xray.predictions``.

* The studies to score are the rows of the Petastorm store (``lake/petastorm/<dataset>``);
  ``new_only`` keeps those without a prediction from this model version yet.
* The probabilities come from the pandas UDF of :mod:`xray_spark.score.udf`.
* A run's rows are written to a staging folder and published with one directory rename
  (``lake/tables/predictions/score_date=D/run_id=R``): a run killed half-way leaves nothing
  visible, and the next ``new_only`` run completes the work.
* One run per model version at a time (``lake/locks/score-<version>.lock``): a second
  ``new_only`` run would score the same studies again.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import time
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from xray_spark import locks, progress
from xray_spark.config import Settings
from xray_spark.errors import UsageError
from xray_spark.lake import Lake, catalog, tables
from xray_spark.lake import store as store_mod
from xray_spark.lake.schema import predictions_schema
from xray_spark.model_card import ModelCard
from xray_spark.model_runtime import check_model_format
from xray_spark.registry import resolve_model
from xray_spark.score.heatmap_run import write_heatmaps
from xray_spark.score.publish import PREDICTIONS, PUBLISH_NEEDS, clean_staging, publish_run, staging_root
from xray_spark.score.run import ScoreRun
from xray_spark.score.udf import ARROW_BATCH_IMAGES, NON_FINITE, NOT_SCORED, score_frame
from xray_spark.session import temporary_conf

log = logging.getLogger("xray_spark.score")

#: The table of films a run could not score, with the reason.
NOT_SCORED_TABLE = "not_scored"


def run_scoring(
    spark: SparkSession,
    lake: Lake,
    settings: Settings,
    *,
    model_version: str | None = None,
    model_path: str | None = None,
    new_only: bool = False,
) -> dict[str, Any]:
    """Score the store of ``settings.dataset`` with one model; returns the run's summary."""
    lake.require_local("score", PUBLISH_NEEDS)
    card = resolve_model(spark, lake, version=model_version, path=model_path)
    check_model_loads(card, store_mod.require_manifest(lake, settings.dataset).image_size)  # before any lock
    wait = settings.locks.wait_seconds
    # Read the store never while a full prepare swaps it; one run per model version at a time.
    with (
        locks.store_reader(lake, settings.dataset, job="score", wait_seconds=wait),
        locks.lake_lock(lake, f"score-{card.version}", job="score", wait_seconds=wait),
        progress.step("scoring"),
    ):
        check_model_loads(card, store_mod.require_manifest(lake, settings.dataset).image_size)  # the store read now
        started = time.monotonic()
        run = ScoreRun.start(settings.dataset, card, new_only=new_only)
        summary = plan_run(spark, lake, run)
        progress.expect(summary["to_score"])
        summary["written"] = score_and_publish(spark, lake, run, settings, summary)
        summary["heatmaps"] = write_heatmaps(spark, lake, run, settings, written=summary["written"])
        tables.register_predictions(spark, lake)
        summary["seconds"] = round(time.monotonic() - started, 1)
        if summary["to_score"]:
            summary["images_per_second"] = round(summary["written"] / max(summary["seconds"], 1e-9), 1)
        return summary


def check_model_loads(card: ModelCard, store_size: int) -> None:
    """Before any task: the model's size matches the store's, and the file is of a format this product opens.

    The driver does not load the model itself (TensorFlow's import and the load are a
    fixed cost of every run, ``bench/results/``): :func:`resolve_model` has verified the file's SHA-256 against
    ``xray.models``, and registration loaded exactly those bytes in safe mode and checked
    their input and outputs against model.json (:func:`~xray_spark.registry.register_model`).
    """
    if card.size != store_size:
        raise UsageError(
            f"model {card.version} takes {card.size} px images and the store holds {store_size} px images: "
            f"score with a model trained on this store, or prepare a store with --set image.size={card.size}"
        )
    check_model_format(card.model_file)


def plan_run(spark: SparkSession, lake: Lake, run: ScoreRun) -> dict[str, Any]:
    """The run's summary so far: how many studies it has to score (stale staging removed first)."""
    stale = clean_staging(lake, older_than_s=6 * 3600)
    total = spark.read.parquet(lake.store_url(run.dataset)).count()
    version = run.card.version
    n_rows = studies_to_score(spark, lake, run.dataset, version, new_only=True).count() if run.new_only else total
    return {
        "run_id": run.run_id,
        "model_version": run.card.version,
        "model_dir": run.card.path,
        "dataset": run.dataset,
        "new_only": run.new_only,
        "studies_in_store": total,
        "to_score": n_rows,
        "already_scored": total - n_rows if run.new_only else 0,
        "score_date": run.score_date,
        "scored_at": run.scored_at.isoformat(),
        "stale_staging_removed": stale,
        "not_scored": {"films": 0},
    }


#: Rows per scoring task at most (a task's films are retried together; progress moves per task).
TASK_ROWS = 2000


def score_and_publish(spark: SparkSession, lake: Lake, run: ScoreRun, settings: Settings, summary: dict) -> int:
    """Score the run's studies in tasks of about 2,000 and publish them; returns the rows written.

    The tasks are the store's own files read in splits of about :data:`TASK_ROWS` rows' bytes, not a
    ``repartition``: that would shuffle every film's PNG bytes through local disk (about 3 GB at the NIH
    release) before the first film is scored. Only a store of fewer splits than cores is repartitioned.
    """
    to_score = summary["to_score"]
    if not to_score:
        return 0
    batch_size = settings.score.batch_size
    cores = spark.sparkContext.defaultParallelism
    in_store = summary["studies_in_store"]
    split = split_bytes(spark, lake.store_url(run.dataset), max(cores, -(-in_store // TASK_ROWS)))
    with (
        temporary_conf(spark, "spark.sql.files.maxPartitionBytes", str(split)),
        temporary_conf(spark, "spark.sql.execution.arrow.maxRecordsPerBatch", str(ARROW_BATCH_IMAGES * batch_size)),
    ):
        rows = studies_to_score(spark, lake, run.dataset, run.card.version, new_only=run.new_only)
        if rows.rdd.getNumPartitions() < cores:
            rows = rows.repartition(cores)  # a small store: its films are few, the shuffle cheap
        scored = score_frame(rows, run, batch_size=batch_size, urgency=settings.score.urgency)
        return publish_scored(spark, lake, run, scored, summary)


def publish_scored(spark: SparkSession, lake: Lake, run: ScoreRun, scored: DataFrame, summary: dict) -> int:
    """Publish the films the model scored; record in ``xray.not_scored`` those it could not, with the reason.

    The model runs once: the run's rows (no pixels) are staged, then split. A film whose outputs were
    not finite never reaches ``xray.predictions``, so no call, heatmap, worklist line or delivery is made
    of it; ``summary["not_scored"]`` counts them, and ``new_only`` runs of this version skip them.
    """
    staged_dir = os.path.join(staging_root(lake, PREDICTIONS), f"{run.run_id}-all")
    scored.write.mode("overwrite").parquet(lake.url_of(staged_dir))
    try:
        staged = spark.read.parquet(lake.url_of(staged_dir))
        good = staged.where(F.col(NOT_SCORED).isNull()).select(*predictions_schema(run.card.labels).fieldNames())
        bad = staged.where(F.col(NOT_SCORED).isNotNull()).select(
            "image_id",
            "model_version",
            F.col(NOT_SCORED).alias("reason"),
            F.lit(run.run_id).alias("run_id"),
            "scored_at",
            "dataset",
        )
        refused = bad.count()
        summary["not_scored"] = {"films": refused, "reason": NON_FINITE} if refused else {"films": 0}
        if refused:
            log.error("%d of the run's films were not scored: %s", refused, NON_FINITE)
            bad = bad.select(*[F.col(f.name).cast(f.dataType) for f in catalog.schema("not_scored").fields])
            tables.write_table(bad, lake, NOT_SCORED_TABLE, mode="append")
        return publish_run(good, lake, score_date=run.score_date, run_id=run.run_id)
    finally:
        shutil.rmtree(staged_dir, ignore_errors=True)


def split_bytes(spark: SparkSession, url: str, tasks: int) -> int:
    """The ``maxPartitionBytes`` that reads the files under ``url`` as about ``tasks`` partitions.

    Spark packs files into a partition counting each as its length plus ``openCostInBytes``
    (4 MiB unless set), so the split is cut from that total, not from the bytes alone.
    """
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(url)
    summary = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()).getContentSummary(path)
    open_cost = int(spark._jsparkSession.sessionState().conf().filesOpenCostInBytes())
    total = int(summary.getLength()) + int(summary.getFileCount()) * open_cost
    return max(1 << 20, -(-total // max(tasks, 1)))


def studies_to_score(spark: SparkSession, lake: Lake, dataset: str, version: str, *, new_only: bool) -> DataFrame:
    """The store's rows (with pixels) to score; with ``new_only`` those this version has not scored."""
    store_url = lake.store_url(dataset)
    try:
        store = spark.read.parquet(store_url)
    except Exception:
        raise UsageError(
            f"no training store for dataset {dataset!r} at {store_url}: run jobs/prepare.py first"
        ) from None
    rows = store.select("image_id", "patient_id", "follow_up", "view", "split", "image")
    done = scored_ids(spark, lake, dataset, version) if new_only else None
    if done is not None:
        rows = rows.join(F.broadcast(done), "image_id", "left_anti")  # ids travel, never the films
    return rows


def scored_ids(spark: SparkSession, lake: Lake, dataset: str, version: str) -> DataFrame | None:
    """The image ids of ``dataset`` that ``version`` has scored, or could not score (``xray.not_scored``):
    a prediction is of (dataset, image, model), and a film a model cannot score is tried again by another model."""
    mine = (F.col("model_version") == version) & (F.col("dataset") == dataset)
    done = [
        t.where(mine).select("image_id")
        for t in (tables.read_table(spark, lake, n) for n in (PREDICTIONS, NOT_SCORED_TABLE))
        if t is not None
    ]
    if not done:
        return None
    return functools.reduce(DataFrame.unionByName, done).distinct()
