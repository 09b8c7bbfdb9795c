"""The evaluate job's pipeline: predictions x labels -> per-finding metrics, plots, a report.

For one model version and one split (default ``test``): per-finding AUROC with a 95%
patient-level bootstrap interval, sensitivity and specificity at the model's operating
thresholds, true versus predicted prevalence (the share of studies at or above the
threshold), ROC curves in one PNG and an HTML report; one row per finding in
``xray.evaluations``.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import math
import os
import time
from typing import Any

import numpy as np
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from xray_spark import report, tables
from xray_spark.errors import UsageError
from xray_spark.evaluation import auroc, bootstrap_auroc_ci, mean_auroc, sensitivity_specificity
from xray_spark.labels import column_name
from xray_spark.lake import Lake
from xray_spark.registry import resolve_model
from xray_spark.schema import EVALUATIONS_SCHEMA


def collect_scored_labels(
    spark: SparkSession, lake: Lake, version: str, split: str, labels: list[str]
) -> dict[str, np.ndarray]:
    """For one model version: y (N x L), p (N x L), patient ids, image ids, on one split."""
    predictions = tables.read_table(spark, lake, "predictions")
    studies = tables.read_table(spark, lake, "studies")
    if predictions is None or studies is None:
        raise UsageError("xray.predictions or xray.studies is missing: run jobs/prepare.py and jobs/score.py first")
    mine = predictions.where(F.col("model_version") == version)
    latest = mine.groupBy("dataset", "image_id").agg(F.max("scored_at").alias("scored_at"))
    mine = mine.join(latest, ["dataset", "image_id", "scored_at"])
    cols = [f"p_{column_name(x)}" for x in labels]
    joined = (
        mine.select("dataset", "image_id", *cols)
        .join(studies.select("dataset", "image_id", "patient_id", "split", "findings"), ["dataset", "image_id"])
        .where(F.col("split") == split)
        .orderBy("dataset", "image_id")
    )
    rows = joined.collect()
    y = np.array([[1.0 if x in (r["findings"] or []) else 0.0 for x in labels] for r in rows], dtype=np.float32)
    p = np.array([[r[c] for c in cols] for r in rows], dtype=np.float32)
    return {
        "y": y.reshape(-1, len(labels)),
        "p": p.reshape(-1, len(labels)),
        "patients": np.array([r["patient_id"] for r in rows]),
        "ids": np.array([r["image_id"] for r in rows], dtype=object),
    }


def finding_metrics(
    data: dict[str, np.ndarray], labels: list[str], thresholds: dict[str, float], *, resamples: int, seed: int
) -> list[dict[str, Any]]:
    out = []
    for i, name in enumerate(labels):
        y, p = data["y"][:, i], data["p"][:, i]
        threshold = float(thresholds.get(name, 0.5))
        low, high = bootstrap_auroc_ci(y, p, data["patients"], resamples=resamples, seed=seed + i)
        sens, spec = sensitivity_specificity(y, p, threshold)
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
                "predicted_prevalence": float((p >= threshold).mean()) if len(y) else float("nan"),
            }
        )
    return out


def html_report(
    meta: dict[str, Any], split: str, metrics: list[dict[str, Any]], roc_png: bytes, n_images: int, n_patients: int
) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "n/a" if math.isnan(v) else f"{v:.3f}"
        return html.escape(str(v))

    rows = "\n".join(
        "<tr>"
        + "".join(f"<td>{cell(m[k])}</td>" for k in ("finding", "positives", "auroc"))
        + f"<td>{cell(m['auroc_low'])} &ndash; {cell(m['auroc_high'])}</td>"
        + "".join(
            f"<td>{cell(m[k])}</td>"
            for k in ("threshold", "sensitivity", "specificity", "true_prevalence", "predicted_prevalence")
        )
        + "</tr>"
        for m in metrics
    )
    mean = mean_auroc({m["finding"]: m["auroc"] for m in metrics})
    image = base64.b64encode(roc_png).decode("ascii")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>xray-spark evaluation {html.escape(meta["version"])}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:70em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:right}}td:first-child{{text-align:left}}</style></head>
<body><h1>Evaluation of {html.escape(meta["version"])}</h1>
<p>Model <b>{html.escape(str(meta.get("model")))}</b> trained on dataset {html.escape(str(meta.get("dataset")))};
evaluated on the <b>{html.escape(split)}</b> split: {n_images:,} images of {n_patients:,} patients
(patients never shared with the train split). Mean AUROC <b>{cell(mean)}</b>.
Intervals are 95% bootstrap intervals over patients; thresholds were chosen on the validation
split by Youden's J.</p>
<table><tr><th>finding</th><th>positives</th><th>AUROC</th><th>95% CI</th><th>threshold</th>
<th>sensitivity</th><th>specificity</th><th>true prevalence</th><th>predicted prevalence</th></tr>
{rows}
</table>
<h2>ROC curves</h2><img alt="ROC curves" src="data:image/png;base64,{image}">
</body></html>
"""


def run_evaluation(
    spark: SparkSession,
    lake: Lake,
    *,
    model_version: str | None = None,
    model_path: str | None = None,
    split: str = "test",
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Evaluate one model version on one split; returns the summary (metrics per finding)."""
    started = time.monotonic()
    folder = resolve_model(spark, lake, version=model_version, path=model_path)
    meta, labels = folder.meta, folder.labels
    data = collect_scored_labels(spark, lake, meta["version"], split, labels)
    if len(data["y"]) == 0:
        raise UsageError(
            f"no prediction of model {meta['version']} on the {split!r} split: score the store with "
            f"jobs/score.py --model-version {meta['version']} first, or choose another split"
        )
    metrics = finding_metrics(data, labels, meta.get("thresholds", {}), resamples=resamples, seed=seed)
    out_dir = lake.path("reports", "evaluate", meta["version"], split)
    os.makedirs(out_dir, exist_ok=True)
    roc = report.roc_curves_png(data["y"], data["p"], labels, title=f"{meta['version']}: ROC on the {split} split")
    with open(os.path.join(out_dir, "roc.png"), "wb") as fh:
        fh.write(roc)
    n_patients = len(set(data["patients"].tolist()))
    with open(os.path.join(out_dir, "report.html"), "w", encoding="utf-8") as fh:
        fh.write(html_report(meta, split, metrics, roc, len(data["y"]), n_patients))
    evaluated_at = dt.datetime.now(dt.UTC).replace(microsecond=0)
    rows = [
        m
        | {
            "model_version": meta["version"],
            "dataset": str(meta.get("dataset")),
            "split": split,
            "evaluated_at": evaluated_at,
        }
        for m in metrics
    ]
    rows = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in rows]
    tables.write_table(spark.createDataFrame(rows, EVALUATIONS_SCHEMA), lake, "evaluations", mode="append")
    return {
        "model_version": meta["version"],
        "split": split,
        "images": len(data["y"]),
        "patients": n_patients,
        "mean_auroc": mean_auroc({m["finding"]: m["auroc"] for m in metrics}),
        "metrics": metrics,
        "report": os.path.join(out_dir, "report.html"),
        "roc_png": os.path.join(out_dir, "roc.png"),
        "seconds": round(time.monotonic() - started, 1),
    }
