"""The worklist job: a scoring date's films in risk order as static pages under ``lake/reports/worklist``.

``run_worklist`` shows what the web app shows, read by the same reader (:class:`LakeView`: the newest
prediction per film, the order of ``xray.worklist``) and drawn from the same templates
(:mod:`xray_spark.pages.render`), with every picture embedded: ``<date>.html`` (the ``limit`` riskiest films of one
scoring date), ``index.html`` (the dates, newest first, and the monitored nights' charts) and
``patients/<id>.html`` (a patient's films in study order with the probabilities of the findings ever called).
The pages need no server and load nothing from elsewhere; they hold no script.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from pyspark.sql import SparkSession

from xray_spark.config import Settings
from xray_spark.errors import UsageError
from xray_spark.lake import Lake
from xray_spark.pages.lake_view import LakeView
from xray_spark.pages.render import (
    StaticLinks,
    monitoring_charts,
    patient_chart,
    ready_to_show,
    render,
    time_zone,
)
from xray_spark.pages.viewer import needs_lookup

log = logging.getLogger(__name__)


def run_worklist(
    spark: SparkSession, lake: Lake, settings: Settings, *, score_date: str | None = None, limit: int = 100
) -> dict[str, Any]:
    """Write the pages of ``settings.dataset`` for the day ``score_date`` (in ``web.timezone``; default: the newest);
    returns a summary.

    ``spark`` is not used: the pages read the lake with pyarrow, as the web app does, so both show the same."""
    started = time.monotonic()
    dataset, view = settings.dataset, LakeView(lake)
    if view.table("predictions") is None:
        raise UsageError("the lake has no predictions yet: run jobs/score.py first")
    zone = time_zone(settings.web.timezone)
    dates = view.dates(dataset, zone)
    if not dates:
        raise UsageError(f"no prediction of dataset {dataset!r}: run jobs/score.py --dataset {dataset} first")
    date = score_date or dates[0][0]
    if date not in dict(dates):
        raise UsageError(
            f"no film of dataset {dataset!r} was scored on {date}: scoring dates are {[d for d, _ in dates]}"
        )
    films = _held(view, dataset, view.worklist(dataset, date, limit, zone))
    ready_to_show(view, dataset, films, settings.worklist.viewer_url)
    if needs_lookup(settings.worklist.viewer_url):
        log.info("worklist.viewer_url names {orthanc_study}, which only the web app can ask for: no viewer links here")
    versions = sorted({f["model_version"] for f in films})
    out_dir = lake.path("reports", "worklist", dataset)
    page, links = f"{out_dir}/{date}.html", StaticLinks(view)
    report = (
        lake.path("reports", "evaluate", versions[0], dataset, "test", "report.html") if len(versions) == 1 else None
    )
    evaluation = f"../../evaluate/{versions[0]}/{dataset}/test/report.html" if report and lake.exists(report) else None
    shown_of = dict(dates)[date]
    values = {"dataset": dataset, "date": date, "films": films, "shown_of": shown_of, "versions": versions}
    lake.write_text(page, render("worklist.html", links, evaluation_href=evaluation, **values))
    monitoring = monitoring_charts(view, dataset, settings.monitor.alpha)
    lake.write_text(
        f"{out_dir}/index.html", render("index.html", links, datasets=[(dataset, dates)], monitoring=monitoring)
    )
    patients = sorted({f["patient_id"] for f in films})
    for patient in patients:
        mine = view.patient(dataset, patient)
        called_ever, chart = patient_chart(mine)
        values = {"dataset": dataset, "patient_id": patient, "films": mine, "called_ever": called_ever, "chart": chart}
        lake.write_text(
            f"{out_dir}/patients/{patient}.html", render("patient.html", StaticLinks(view, "../"), **values)
        )
    return {
        "dataset": dataset,
        "score_date": date,
        "films": len(films),
        "films_scored_that_date": shown_of,
        "with_heatmap": sum(f["overlay"] is not None for f in films),
        "patients": len(patients),
        "page": page,
        "index": f"{out_dir}/index.html",
        "seconds": round(time.monotonic() - started, 1),
    }


def _held(view: LakeView, dataset: str, films: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The films whose picture the store still holds (xray.studies and the store disagree after a prepare killed
    between them: the next prepare mends it)."""
    gone = [f["image_id"] for f in films if view.picture(dataset, f["image_id"]) is None]
    if gone:
        log.warning(
            "%d of the worklist's films are no longer in store %r and are left out: %s",
            len(gone),
            dataset,
            ", ".join(gone[:5]),
        )
    return [f for f in films if f["image_id"] not in set(gone)]
