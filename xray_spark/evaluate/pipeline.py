"""The evaluate job: predictions x labels -> per-finding metrics, plots, a report.

For one model version and one split (default ``test``): per-finding AUROC with a 95%
patient-level bootstrap interval, sensitivity and specificity at the model's operating
thresholds, true versus predicted prevalence (the share of studies at or above the
threshold), ROC curves in one PNG and an HTML report; one row per finding in
``xray.evaluations``.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from typing import Any

import numpy as np
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from xray_spark import report
from xray_spark.config import Settings
from xray_spark.errors import UsageError
from xray_spark.evaluate.html import html_report
from xray_spark.evaluate.localization import localization_metrics
from xray_spark.lake import Lake, catalog, tables
from xray_spark.metrics import (
    auroc,
    bootstrap_auroc_ci,
    brier_score,
    expected_calibration_error,
    mean_auroc,
    sensitivity_specificity,
)
from xray_spark.model_card import ModelCard
from xray_spark.operating import CALIBRATED, NOT_CALIBRATED
from xray_spark.registry import resolve_model
from xray_spark.scored import collect_scored_labels


def finding_metrics(
    data: dict[str, np.ndarray], labels: list[str], thresholds: dict[str, float | None], *, resamples: int, seed: int
) -> list[dict[str, Any]]:
    """Per finding: AUROC and its patient bootstrap interval, the rates at the model's threshold, calibration.

    A finding without a threshold is "not calibrated": its rates at a threshold are NaN.
    """
    out = []
    nan = float("nan")
    for i, name in enumerate(labels):
        y, p = data["y"][:, i], data["p"][:, i]
        threshold = thresholds.get(name)
        low, high = bootstrap_auroc_ci(y, p, data["groups"], resamples=resamples, seed=seed + i)
        sens, spec = sensitivity_specificity(y, p, threshold) if threshold is not None else (nan, nan)
        out.append(
            {
                "finding": name,
                "images": len(y),
                "positives": int(y.sum()),
                "auroc": auroc(y, p),
                "auroc_low": low,
                "auroc_high": high,
                "threshold": threshold,
                "sensitivity": sens,
                "specificity": spec,
                "true_prevalence": float(y.mean()) if len(y) else float("nan"),
                "predicted_prevalence": float((p >= threshold).mean()) if len(y) and threshold is not None else nan,
                "status": CALIBRATED if threshold is not None else NOT_CALIBRATED,
                "brier": brier_score(y, p),
                "ece": expected_calibration_error(y, p),
            }
        )
    return out


def run_evaluation(
    spark: SparkSession,
    lake: Lake,
    settings: Settings,
    *,
    model_version: str | None = None,
    model_path: str | None = None,
    localization: bool = False,
    dataset: str | None = None,
) -> dict[str, Any]:
    """Evaluate one model version on the films of one dataset (default: the one it was trained on) in
    ``evaluate.split``; returns the summary (metrics per finding).

    With ``localization``, its heatmaps are also compared with the hand-drawn boxes
    (:mod:`xray_spark.evaluate.localization`).
    """
    started = time.monotonic()
    e = settings.evaluate
    card = resolve_model(spark, lake, version=model_version, path=model_path)
    dataset = dataset or str(card.dataset)
    data = collect_scored_labels(spark, lake, card.version, e.split, card.labels, dataset=dataset)
    if len(data["y"]) == 0:
        raise UsageError(
            f"no prediction of model {card.version} on the {e.split!r} films of dataset {dataset!r}: score them with "
            f"jobs/score.py --dataset {dataset} --model-version {card.version} first, or choose another split or "
            f"dataset (evaluated datasets: {', '.join(scored_datasets(spark, lake, card.version)) or 'none'})"
        )
    metrics = finding_metrics(data, card.labels, card.thresholds, resamples=e.bootstrap, seed=e.seed)
    located = localize(spark, lake, card, e.split, dataset, seed=e.seed) if localization else None
    outputs = write_report(lake, card, dataset, e.split, data, metrics, located)
    write_rows(spark, lake, card, dataset, e.split, metrics)
    return {
        "model_version": card.version,
        "dataset": dataset,
        "split": e.split,
        "images": len(data["y"]),
        "patients": len(set(data["groups"].tolist())),
        "mean_auroc": mean_auroc({m["finding"]: m["auroc"] for m in metrics}),
        "mean_ece": _mean([m["ece"] for m in metrics]),
        "threshold_rule": card.threshold_rule,
        "metrics": metrics,
        **outputs,
        **({"localization": located} if located is not None else {}),
        "seconds": round(time.monotonic() - started, 1),
    }


def scored_datasets(spark: SparkSession, lake: Lake, version: str) -> list[str]:
    """The datasets whose films the model version scored."""
    predictions = tables.read_table(spark, lake, "predictions")
    if predictions is None:
        return []
    rows = predictions.where(F.col("model_version") == version).select("dataset").distinct().collect()
    return sorted(r["dataset"] for r in rows)


def localize(
    spark: SparkSession, lake: Lake, card: ModelCard, split: str, dataset: str, *, seed: int
) -> dict[str, Any]:
    """The model version's newest heatmap per film and finding on ``split`` of ``dataset``, against ``xray.boxes``."""
    maps = tables.read_table(spark, lake, "heatmaps")
    boxes = tables.read_table(spark, lake, "boxes")
    studies = tables.read_table(spark, lake, "studies")
    if maps is None or boxes is None or studies is None:
        missing = [n for n, t in (("heatmaps", maps), ("boxes", boxes), ("studies", studies)) if t is None]
        raise UsageError(
            f"--localization needs xray.{', xray.'.join(missing)}: prepare with --bbox, and score with "
            "--heatmaps called (or top:N) first"
        )
    mine = maps.where((F.col("model_version") == card.version) & (F.col("dataset") == dataset))
    newest = mine.groupBy("dataset", "image_id", "finding").agg(F.max("scored_at").alias("scored_at"))
    films = studies.where(F.col("split") == split).select("dataset", "image_id", "original_width", "original_height")
    columns = ["peak_x", "peak_y", "box_x", "box_y", "box_w", "box_h"]
    chosen = (
        mine.join(newest, ["dataset", "image_id", "finding", "scored_at"])
        .join(films, ["dataset", "image_id"])
        .select("dataset", "image_id", "finding", *columns, "original_width", "original_height")
    )
    maps_pd = chosen.toPandas()
    boxes_pd = boxes.join(films.select("dataset", "image_id"), ["dataset", "image_id"]).toPandas()
    keys = ["dataset", "image_id"]
    maps_pd["image_id"] = maps_pd[keys].astype(str).agg("/".join, axis=1)
    boxes_pd["image_id"] = boxes_pd[keys].astype(str).agg("/".join, axis=1)
    result = localization_metrics(maps_pd.drop(columns="dataset"), boxes_pd.drop(columns="dataset"), seed=seed)
    return result | {"heatmaps_on_split": len(maps_pd), "boxes_on_split": len(boxes_pd)}


def write_report(
    lake: Lake,
    card: ModelCard,
    dataset: str,
    split: str,
    data: dict[str, np.ndarray],
    metrics: list[dict[str, Any]],
    located: dict[str, Any] | None = None,
) -> dict[str, str]:
    """``reports/evaluate/<version>/<dataset>/<split>/``: the ROC curves (PNG) and the HTML report."""
    out_dir = report_dir(lake, card.version, dataset, split)
    films = f"the {split} films of {dataset}"
    roc = report.roc_curves_png(data["y"], data["p"], card.labels, title=f"{card.version}: ROC on {films}")
    reliability = report.reliability_png(
        data["y"], data["p"], card.labels, title=f"{card.version}: reliability on {films}"
    )
    n_patients = len(set(data["groups"].tolist()))
    page = html_report(card, dataset, split, metrics, (roc, reliability), len(data["y"]), n_patients, located)
    outputs = {"report": f"{out_dir}/report.html", "roc_png": f"{out_dir}/roc.png"}
    outputs["reliability_png"] = f"{out_dir}/reliability.png"
    lake.write_bytes(outputs["roc_png"], roc)
    lake.write_bytes(outputs["reliability_png"], reliability)
    lake.write_text(outputs["report"], page)
    return outputs


def report_dir(lake: Lake, version: str, dataset: str, split: str) -> str:
    """Where the evaluation of ``version`` on the ``split`` films of ``dataset`` is written."""
    return lake.path("reports", "evaluate", version, dataset, split)


def _mean(values: list[float]) -> float:
    defined = [v for v in values if not math.isnan(v)]
    return float(np.mean(defined)) if defined else float("nan")


def write_rows(
    spark: SparkSession, lake: Lake, card: ModelCard, dataset: str, split: str, metrics: list[dict[str, Any]]
) -> None:
    """One row per finding appended to ``xray.evaluations`` (NaN written as null), for the dataset evaluated on."""
    evaluated_at = dt.datetime.now(dt.UTC).replace(microsecond=0)
    context = {
        "model_version": card.version,
        "dataset": dataset,
        "split": split,
        "evaluated_at": evaluated_at,
    }
    rows = [m | context for m in metrics]
    rows = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in rows]
    tables.write_table(spark.createDataFrame(rows, catalog.schema("evaluations")), lake, "evaluations", mode="append")
