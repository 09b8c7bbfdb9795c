"""Scoring: a trained model applied across the archive with a pandas UDF.

* The studies to score come from the store (``xray.studies`` x the Parquet store);
  ``new_only`` keeps those without a prediction from this model version yet.
* The UDF takes the store's PNG bytes in Arrow batches of at most
  :data:`ARROW_BATCH_IMAGES` x ``batch_size`` rows (memory per worker stays bounded however
  large a partition is), decodes and predicts in the same Python step, and returns the
  probabilities. The model, loaded once per Python worker, holds its own preprocessing,
  so scoring feeds exactly the pixels training saw.
* A run's rows are written to a staging folder and published with one directory rename
  (``lake/tables/predictions/score_date=D/run_id=R``): a run killed half-way leaves nothing
  visible, and the next ``new_only`` run completes the work.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from xray_spark import locks, tables
from xray_spark import store as store_mod
from xray_spark.errors import UsageError
from xray_spark.labels import column_name
from xray_spark.lake import Lake
from xray_spark.registry import ModelFolder, load_checked, resolve_model
from xray_spark.schema import XraySchema

log = logging.getLogger("xray_spark.scoring")

PREDICTIONS = "predictions"
#: Rows per Arrow batch sent to the scoring UDF, in model batches.
ARROW_BATCH_IMAGES = 4
STAGING = "_staging"


# =========================================================================================
# the model
# =========================================================================================
def check_model_loads(folder: ModelFolder, store_size: int) -> None:
    """Before any task: the model's size matches the store's, and the file loads (safely) on the driver."""
    if folder.size != store_size:
        raise UsageError(
            f"model {folder.version} takes {folder.size} px images and the store holds {store_size} px images: "
            f"score with a model trained on this store, or prepare a store with --set image.size={folder.size}"
        )
    load_checked(folder)


#: The model each Python worker has loaded, by file: Spark reuses its Python workers across
#: tasks, so a worker loads the model once however many partitions it scores.
_WORKER_MODELS: dict[str, Any] = {}


def worker_model(model_file: str, sha256: str) -> Any:
    """The model for this Python worker (loaded on first use, on the task's GPU if it was given one).

    The file is hashed again on the executor: it must be the one the driver verified.
    """
    model = _WORKER_MODELS.get(model_file)
    if model is None:
        from xray_spark.registry import file_sha256

        if file_sha256(model_file) != sha256:
            raise ValueError(f"model file {model_file} changed after the driver verified it: refusing to load it")
        from pyspark import TaskContext

        ctx = TaskContext.get()
        gpus = ctx.resources().get("gpu") if ctx is not None else None
        if gpus is not None and gpus.addresses and "tensorflow" not in sys.modules:
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpus.addresses)
        from xray_spark.models import load_model

        model = _WORKER_MODELS[model_file] = load_model(model_file)
    return model


def predict_png_udf(model_file: str, sha256: str, n_labels: int, size: int, batch_size: int) -> Any:
    """A pandas UDF (iterator of Arrow batches): the store's PNG bytes in, ``n_labels`` probabilities out.

    Decoding and prediction happen in one Python step, so only compressed images cross
    from the JVM to Python and only probabilities come back.
    """

    @F.pandas_udf(T.ArrayType(T.FloatType()))
    def predict(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
        import cv2

        from xray_spark import scoring  # the worker's module, so its model cache outlives the task

        model = scoring.worker_model(model_file, sha256)
        for images in batches:
            pixels = np.empty((len(images), size, size, 1), dtype=np.uint8)
            for i, data in enumerate(images):
                image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
                if image is None or image.shape != (size, size):
                    received = "undecodable bytes" if image is None else f"shape {image.shape}"
                    raise ValueError(f"expected a {size} x {size} gray PNG per row, received {received}")
                pixels[i, :, :, 0] = image
            out = np.zeros((0, n_labels), dtype=np.float32)
            if len(pixels):
                out = np.concatenate(
                    [
                        np.asarray(model(pixels[start : start + batch_size], training=False), dtype=np.float32)
                        for start in range(0, len(pixels), batch_size)
                    ]
                )
            if out.shape[1] != n_labels:
                raise ValueError(f"the model gave {out.shape[1]} outputs per image, expected {n_labels}")
            yield pd.Series(list(out))

    return predict


# =========================================================================================
# what to score
# =========================================================================================
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
    done = scored_ids(spark, lake, version) if new_only else None
    if done is not None:
        rows = rows.join(done, "image_id", "left_anti")
    return rows


def scored_ids(spark: SparkSession, lake: Lake, version: str) -> DataFrame | None:
    predictions = tables.read_table(spark, lake, PREDICTIONS)
    if predictions is None:
        return None
    return predictions.where(F.col("model_version") == version).select("image_id").distinct()


def prediction_columns(labels: Sequence[str]) -> list[str]:
    return [f"p_{column_name(label)}" for label in labels]


def predictions_schema(labels: Sequence[str]) -> T.StructType:
    """``xray.predictions`` (the partition columns ``score_date`` and ``run_id`` come from the folders)."""
    return T.StructType(
        [
            T.StructField("image_id", T.StringType(), False),
            T.StructField("patient_id", T.IntegerType(), False),
            T.StructField("follow_up", T.IntegerType(), False),
            T.StructField("view", T.StringType(), False),
            T.StructField("dataset", T.StringType(), False),
            T.StructField("model_version", T.StringType(), False),
            T.StructField("scored_at", T.TimestampType(), False),
        ]
        + [T.StructField(c, T.FloatType(), False) for c in prediction_columns(labels)]
        + [
            T.StructField("top_finding", T.StringType(), False),
            T.StructField("top_probability", T.FloatType(), False),
            T.StructField("positive_findings", T.ArrayType(T.StringType()), False),
        ]
    )


def score_frame(
    rows: DataFrame, folder: ModelFolder, *, batch_size: int, dataset: str, scored_at: dt.datetime
) -> DataFrame:
    """Predictions for ``rows``: one probability column per label, the top finding, the positives."""
    labels = folder.labels
    meta = folder.meta
    thresholds = [float(meta.get("thresholds", {}).get(label, 0.5)) for label in labels]
    predict = predict_png_udf(folder.model_file, folder.model_sha256, len(labels), folder.size, batch_size)
    scored = rows.withColumn("_p", predict(F.col(XraySchema.image.name)))
    prob_cols = [F.col("_p")[i].alias(name) for i, name in enumerate(prediction_columns(labels))]
    label_array = F.array(*[F.lit(x) for x in labels])
    top_index = F.expr("array_position(_p, array_max(_p))")
    positives = F.filter(
        F.arrays_zip(
            label_array.alias("label"), F.col("_p").alias("p"), F.array(*[F.lit(t) for t in thresholds]).alias("t")
        ),
        lambda z: z["p"] >= z["t"],
    )
    return scored.select(
        "image_id",
        "patient_id",
        "follow_up",
        "view",
        F.lit(dataset).alias("dataset"),
        F.lit(meta["version"]).alias("model_version"),
        F.lit(scored_at).cast("timestamp").alias("scored_at"),
        *prob_cols,
        F.element_at(label_array, top_index.cast("int")).alias("top_finding"),
        F.array_max("_p").alias("top_probability"),
        F.transform(positives, lambda z: z["label"]).alias("positive_findings"),
    )


# =========================================================================================
# publishing a run
# =========================================================================================
def _local(lake: Lake) -> None:
    if not lake.is_local:
        raise UsageError("scoring publishes runs with a directory rename: use a local or mounted --lake for score")


def publish_run(df: DataFrame, lake: Lake, *, score_date: str, run_id: str) -> int:
    """Write ``df`` to staging, then rename it into place in one step; returns the rows written."""
    _local(lake)
    staging = lake.path("tables", STAGING, PREDICTIONS, run_id)
    final_parent = lake.path("tables", PREDICTIONS, f"score_date={score_date}")
    df.write.mode("overwrite").parquet("file://" + staging)
    written = df.sparkSession.read.parquet("file://" + staging).count()
    os.makedirs(final_parent, exist_ok=True)
    os.replace(staging, os.path.join(final_parent, f"run_id={run_id}"))  # the commit: one rename
    return written


def clean_staging(lake: Lake, older_than_s: float = 0.0) -> list[str]:
    """Remove what killed runs left in staging (never visible to readers); returns what was removed."""
    root = lake.path("tables", STAGING, PREDICTIONS)
    removed = []
    if os.path.isdir(root):
        now = time.time()
        for name in os.listdir(root):
            path = os.path.join(root, name)
            if now - os.path.getmtime(path) >= older_than_s:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(name)
    return removed


def new_run_id() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def run_scoring(
    spark: SparkSession,
    lake: Lake,
    dataset: str,
    *,
    model_version: str | None = None,
    model_path: str | None = None,
    new_only: bool = False,
    batch_size: int = 64,
    lock_wait_s: float = 0.0,
) -> dict[str, Any]:
    """Score the store's studies with one model; returns the run's summary.

    One run per model version at a time (``lake/locks/score-<version>.lock``): a second
    ``new_only`` run would score the same studies again.
    """
    _local(lake)
    folder = resolve_model(spark, lake, version=model_version, path=model_path)
    manifest = store_mod.require_manifest(lake, dataset)
    check_model_loads(folder, manifest.image_size)
    with locks.lake_lock(lake, f"score-{folder.version}", job="score", wait_seconds=lock_wait_s):
        return _score(spark, lake, dataset, folder, new_only=new_only, batch_size=batch_size)


def _score(
    spark: SparkSession, lake: Lake, dataset: str, folder: ModelFolder, *, new_only: bool, batch_size: int
) -> dict[str, Any]:
    started = time.monotonic()
    meta = folder.meta
    model_dir = folder.path
    stale = clean_staging(lake, older_than_s=6 * 3600)
    run_id = new_run_id()
    scored_at = dt.datetime.now(dt.UTC).replace(microsecond=0)
    score_date = scored_at.date().isoformat()
    rows = studies_to_score(spark, lake, dataset, meta["version"], new_only=new_only)
    total = spark.read.parquet(lake.store_url(dataset)).count()
    n_rows = rows.count()
    summary: dict[str, Any] = {
        "run_id": run_id,
        "model_version": meta["version"],
        "model_dir": model_dir,
        "dataset": dataset,
        "new_only": new_only,
        "studies_in_store": total,
        "to_score": n_rows,
        "already_scored": total - n_rows if new_only else 0,
        "score_date": score_date,
        "stale_staging_removed": stale,
    }
    if n_rows == 0:
        summary.update(written=0, seconds=round(time.monotonic() - started, 1))
        tables.register_predictions(spark, lake)
        return summary
    n_partitions = max(spark.sparkContext.defaultParallelism, -(-n_rows // 2000))
    scored = score_frame(
        rows.repartition(n_partitions), folder, batch_size=batch_size, dataset=dataset, scored_at=scored_at
    )
    arrow_key = "spark.sql.execution.arrow.maxRecordsPerBatch"
    previous = spark.conf.get(arrow_key)
    spark.conf.set(arrow_key, str(ARROW_BATCH_IMAGES * batch_size))
    try:
        summary["written"] = publish_run(scored, lake, score_date=score_date, run_id=run_id)
    finally:
        spark.conf.set(arrow_key, previous)
    tables.register_predictions(spark, lake)
    summary["seconds"] = round(time.monotonic() - started, 1)
    summary["images_per_second"] = round(summary["written"] / max(summary["seconds"], 1e-9), 1)
    return summary
