"""The worklist job: a scoring date's films in risk order as static pages under ``lake/reports/worklist``.

``run_worklist`` reads the newest predictions of the dataset (``xray.latest_predictions``) for
one scoring date, takes the ``limit`` riskiest films (the order of ``xray.worklist``), their
stored images, their newest heatmaps and their patients' other films, and writes
``<date>.html``, ``index.html`` and one page per patient (see :mod:`xray_spark.worklist.page`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from xray_spark import risk
from xray_spark.config import Settings
from xray_spark.errors import UsageError
from xray_spark.labels import FINDINGS, probability_column
from xray_spark.lake import Lake, tables
from xray_spark.pictures import heatmap_to_show, overlay_png
from xray_spark.viewer import viewer_link
from xray_spark.worklist.page import Film, index_html, patient_html, worklist_html

log = logging.getLogger(__name__)


def run_worklist(
    spark: SparkSession, lake: Lake, settings: Settings, *, score_date: str | None = None, limit: int = 100
) -> dict[str, Any]:
    """Write the pages of ``settings.dataset`` for ``score_date`` (default: its newest); returns a summary."""
    started = time.monotonic()
    dataset = settings.dataset
    latest = _latest(spark, lake, dataset)
    dates = [
        (r["score_date"], int(r["n"])) for r in latest.groupBy("score_date").agg(F.count("*").alias("n")).collect()
    ]
    dates = sorted(((str(d), n) for d, n in dates), reverse=True)
    date = score_date or dates[0][0]
    if date not in dict(dates):
        raise UsageError(
            f"no film of dataset {dataset!r} was scored on {date}: scoring dates are {[d for d, _ in dates]}"
        )
    day = latest.where(F.col("score_date") == date)
    top = day.orderBy(*risk.order_columns()).limit(limit).collect()
    films = _films(spark, lake, dataset, top, settings.worklist.viewer_url)
    out_dir = lake.path("reports", "worklist", dataset)
    version = top[0]["model_version"]
    evaluation = f"../../evaluate/{version}/test/report.html"  # relative to the page
    has_evaluation = lake.exists(lake.path("reports", "evaluate", version, "test", "report.html"))
    page = f"{out_dir}/{date}.html"
    shown_of = dict(dates)[date]
    lake.write_text(
        page,
        worklist_html(
            dataset,
            date,
            films,
            model_version=version,
            evaluation_href=evaluation if has_evaluation else None,
            shown_of=shown_of,
        ),
    )
    monitoring = _monitoring(spark, lake, dataset)
    lake.write_text(f"{out_dir}/index.html", index_html(dataset, dates, monitoring, settings.monitor.alpha))
    patients = sorted({f.patient_id for f in films})
    for patient, (points, findings) in _patients(latest, lake, dataset, patients).items():
        lake.write_text(f"{out_dir}/patients/{patient}.html", patient_html(dataset, patient, points, findings))
    return {
        "dataset": dataset,
        "score_date": date,
        "films": len(films),
        "films_scored_that_date": shown_of,
        "with_heatmap": sum(f.overlay is not None for f in films),
        "patients": len(patients),
        "page": page,
        "index": f"{out_dir}/index.html",
        "seconds": round(time.monotonic() - started, 1),
    }


def _monitoring(spark: SparkSession, lake: Lake, dataset: str) -> dict[str, list[dict[str, Any]]]:
    """``xray.monitoring`` of the dataset: measure -> its tested nights in order (score_date, p_value, alert)."""
    table = tables.read_table(spark, lake, "monitoring")
    if table is None:
        return {}
    rows = (
        table.where((F.col("dataset") == dataset) & (F.col("test") != "none"))
        .select("measure", "score_date", "run_id", "p_value", "alert")
        .orderBy("run_id")
        .collect()
    )
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r["measure"], []).append(r.asDict())
    return out


def _latest(spark: SparkSession, lake: Lake, dataset: str) -> DataFrame:
    registered = tables.ensure_registered(spark, lake)
    if tables.qualified("latest_predictions") not in registered:
        raise UsageError("the lake has no predictions yet: run jobs/score.py first")
    latest = spark.table(tables.qualified("latest_predictions")).where(F.col("dataset") == dataset)
    if latest.isEmpty():
        raise UsageError(f"no prediction of dataset {dataset!r}: run jobs/score.py --dataset {dataset} first")
    return latest


def _films(spark: SparkSession, lake: Lake, dataset: str, top: list[Any], viewer_url: str = "") -> list[Film]:
    """The rows with their thumbnails, overlays and study details."""
    ids = [r["image_id"] for r in top]
    store = spark.read.parquet(lake.store_url(dataset)).where(F.col("image_id").isin(ids))
    images = {r["image_id"]: bytes(r["image"]) for r in store.select("image_id", "image").collect()}
    gone = [r["image_id"] for r in top if r["image_id"] not in images]
    if gone:  # xray.studies and the store disagree (a prepare killed between them): the next prepare mends it
        log.warning(
            "%d of the worklist's films are no longer in store %r and are left out: %s",
            len(gone),
            dataset,
            ", ".join(gone[:5]),
        )
        top = [r for r in top if r["image_id"] in images]
    details = _study_details(spark, lake, dataset, ids)
    study_uids = _study_uids(spark, lake, dataset, ids) if viewer_url else {}
    maps = _heatmaps(spark, lake, dataset, ids, top)
    films = []
    for rank, r in enumerate(top, start=1):
        called = [(f, float(r[probability_column(f)])) for f in r["positive_findings"]]
        mine = maps.get(r["image_id"], {})
        finding = heatmap_to_show(dict(called), r["risk_finding"], mine)
        overlay = (finding, overlay_png(mine[finding], 160)) if finding else None
        accession, when = details.get(r["image_id"], (None, None))
        films.append(
            Film(
                rank,
                r["image_id"],
                r["patient_id"],
                r["follow_up"],
                r["view"],
                r["risk_score"],
                r["risk_finding"],
                called,
                accession,
                when,
                images[r["image_id"]],
                overlay,
                viewer_link(viewer_url, study_uids.get(r["image_id"]), accession),
            )
        )
    return films


def _study_uids(spark: SparkSession, lake: Lake, dataset: str, ids: list[str]) -> dict[str, str]:
    """The Study Instance UID of each DICOM film among ``ids`` (``xray.dicom_instances``)."""
    instances = tables.read_table(spark, lake, "dicom_instances")
    if instances is None:
        return {}
    rows = instances.where((F.col("dataset") == dataset) & F.col("image_id").isin(ids)).select("image_id", "study_uid")
    return {r["image_id"]: r["study_uid"] for r in rows.collect() if r["study_uid"]}


def _study_details(spark: SparkSession, lake: Lake, dataset: str, ids: list[str]) -> dict[str, tuple[Any, Any]]:
    studies = tables.read_table(spark, lake, "studies")
    if studies is None or "accession_number" not in studies.columns:
        return {}
    rows = studies.where((F.col("dataset") == dataset) & F.col("image_id").isin(ids))
    return {
        r["image_id"]: (r["accession_number"], r["study_datetime"].isoformat(sep=" ") if r["study_datetime"] else None)
        for r in rows.select("image_id", "accession_number", "study_datetime").collect()
    }


def _heatmaps(
    spark: SparkSession, lake: Lake, dataset: str, ids: list[str], top: list[Any]
) -> dict[str, dict[str, bytes]]:
    """Per film, the newest heatmap of each finding by the model version that scored it."""
    maps = tables.read_table(spark, lake, "heatmaps")
    if maps is None or not ids:
        return {}
    versions = {r["image_id"]: r["model_version"] for r in top}
    rows = maps.where((F.col("dataset") == dataset) & F.col("image_id").isin(ids)).orderBy("scored_at").collect()
    out: dict[str, dict[str, bytes]] = {}
    for r in rows:  # oldest first: a newer heatmap replaces an older one
        if versions.get(r["image_id"]) == r["model_version"]:
            out.setdefault(r["image_id"], {})[r["finding"]] = bytes(r["heatmap_png"])
    return out


def _patients(latest: DataFrame, lake: Lake, dataset: str, patients: list[int]) -> dict[int, tuple[list, list]]:
    """Per patient: the films in study order with their probabilities, and the findings ever called."""
    rows = latest.where(F.col("patient_id").isin(patients)).collect()
    spark = latest.sparkSession
    details = _study_details(spark, lake, dataset, [r["image_id"] for r in rows])
    by_patient: dict[int, list] = {}
    for r in rows:
        when = details.get(r["image_id"], (None, None))[1]
        probs = {f: float(r[probability_column(f)]) for f in FINDINGS if probability_column(f) in r.asDict()}
        point = {"follow_up": r["follow_up"], "when": when, "image_id": r["image_id"], "probs": probs}
        by_patient.setdefault(r["patient_id"], []).append(point | {"called": set(r["positive_findings"])})
    out = {}
    for patient, points in by_patient.items():
        points.sort(key=lambda p: (p["when"] is None, p["when"] or "", p["follow_up"]))
        findings = [f for f in FINDINGS if any(f in p["called"] for p in points)]
        out[patient] = (points, findings)
    return out
