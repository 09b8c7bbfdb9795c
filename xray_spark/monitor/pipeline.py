"""``monitor``: each night of a dataset against a reference window, with no ground truth needed.

For the champion's scoring runs on a dataset (a *night* is one run, see
:mod:`xray_spark.monitor.films`), each night is compared with the reference
(``monitor.reference``): ``nights:N``, the champion's first N runs on the dataset (until
there are N, the nights build the reference and nothing is tested), or ``validation``, the
champion's validation films (of the dataset it was trained on) as it scored them. Measures
(:mod:`xray_spark.monitor.drift` for the tests):

* inputs: each DICOM category a film carries (manufacturer, model, photometric
  interpretation, bits stored, transfer syntax, view; chi-square, or Fisher's exact test on
  a sparse 2 x 2) and each number (pixel spacing, the stored picture's mean, spread and
  saturated share; Kolmogorov-Smirnov). A category no film of either side has (an NIH
  store carries no DICOM header) is not measured;
* outputs: per finding, the calibrated probability (KS against the reference) and, per
  calibrated finding, the night's call rate at the model's threshold against the share of
  the reference's films called (Fisher's exact test of the two samples). While ``nights:N``
  is still being built, the call rates alone are tested, against the share validation
  called (from the model card; the exact binomial test where the card does not say how many
  validation films there were): a hospital whose prevalence is not NIH's would otherwise be
  alerted every night, while a champion calling wildly unlike validation on its first
  nights is still caught.

A night's alerts are chosen by Holm's step-down procedure at family-wise level
``monitor.alpha``. A night with fewer than ``monitor.min_films`` films is recorded, not
tested. One row per night and measure goes to ``xray.monitoring`` (a rerun of a night
replaces its rows). Without ``--from``/``--to`` the nights not yet monitored are tested.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from xray_spark import registry
from xray_spark.config import Settings
from xray_spark.config.sections import parse_reference
from xray_spark.errors import UsageError
from xray_spark.lake import Lake, tables
from xray_spark.monitor import drift
from xray_spark.monitor.films import CATEGORIES, NUMBERS, film_frame
from xray_spark.monitor.record import write_rows
from xray_spark.monitor.run import MonitorRun, MonitorSummary

log = logging.getLogger(__name__)

TESTS = {"numbers": "ks", "categories": "chi-square or fisher", "rate": "fisher or binomial"}


def _champion(spark: SparkSession, lake: Lake) -> Any:
    holder = registry.alias_holder(spark, lake)
    if holder is None:
        raise UsageError("no model holds the champion alias: promote one (jobs/promote.py) before monitoring")
    return registry.resolve_model(spark, lake, version=holder["version"])


def _trained_on(spark: SparkSession, lake: Lake, card: Any) -> str:
    """The dataset the champion was trained on (its validation films are a reference)."""
    return str((registry.registered_row(spark, lake, card.version) or {}).get("dataset") or "")


def _reference(spark: SparkSession, lake: Lake, mine: DataFrame, card: Any, how: str) -> tuple[DataFrame, list, str]:
    """The reference's prediction rows, the runs that make it (tested never) and its description."""
    kind, n = parse_reference(how)
    if kind == "nights":
        runs = [r["run_id"] for r in mine.select("run_id").distinct().orderBy("run_id").limit(n).collect()]
        return mine.where(F.col("run_id").isin(runs)), runs, f"the champion's first {n} nights ({len(runs)} so far)"
    trained_on = _trained_on(spark, lake, card)
    studies = tables.read_table(spark, lake, "studies")
    val = studies.where((F.col("dataset") == trained_on) & (F.col("split") == "val")).select("image_id")
    every = tables.read_table(spark, lake, "predictions")
    scored = every.where((F.col("model_version") == card.version) & (F.col("dataset") == trained_on))
    scored = scored.join(val, "image_id", "left_semi").dropDuplicates(["image_id"])
    if scored.isEmpty():
        raise UsageError(
            f"monitor.reference validation: the champion {card.version} has not scored the validation films of "
            f"{trained_on!r}; score them (jobs/score.py --set dataset={trained_on}) or use nights:N"
        )
    return scored, [], f"the champion's validation films of {trained_on}"


def measure_night(
    reference: pd.DataFrame | None, night: pd.DataFrame, findings: Sequence[str], expected: dict[str, tuple[float, int]]
) -> list[tuple[str, drift.Measured]]:
    """(kind, measured) of every measure of one night: inputs first, then the outputs. A calibrated finding's
    call rate is tested against the reference's (the share of its films called), or, without a reference (it
    is still being built), against validation's share from the model card (``expected``)."""
    out: list[tuple[str, drift.Measured]] = []
    if reference is None:
        return [("output", drift.rate(f"call rate {f}", *_calls(night, f, r))) for f, r in expected.items()]
    called = {f: (float(reference[f"call:{f}"].mean()), len(reference)) for f in expected}
    for name in CATEGORIES:
        if reference[name].notna().any() or night[name].notna().any():
            sides = (df[name].fillna("(none)").astype(str).tolist() for df in (reference, night))
            out.append(("input", drift.categories(name, *sides)))
    for name in NUMBERS:
        out.append(("input", drift.numbers(name, reference[name].tolist(), night[name].tolist())))
    for f in findings:
        out.append(("output", drift.numbers(f"probability {f}", reference[f"p:{f}"].tolist(), night[f"p:{f}"])))
    out += measure_night(None, night, findings, called)
    return out


def _calls(night: pd.DataFrame, finding: str, expected: tuple[float, int]) -> tuple[float, int, int, int]:
    """drift.rate's arguments after its measure: the expected share, the night's calls and films, and the films
    the share was measured on (the reference's, or validation's)."""
    share, films = expected
    return share, int(night[f"call:{finding}"].sum()), len(night), films


def _expected_rates(card: Any) -> dict[str, tuple[float, int]]:
    """(share called, films) of each calibrated finding on the validation split, from the model card."""
    points = card.meta.get("operating_points") or {}
    return {
        f: (float(points[f]["val_called"]), int(points[f].get("val_images") or 0))
        for f in card.labels
        if card.thresholds.get(f) is not None and "val_called" in (points.get(f) or {})
    }


def _nights(spark, lake, mine: DataFrame, dataset: str, start, end) -> list[str]:
    runs = mine
    if start:
        runs = runs.where(F.col("score_date") >= start)
    if end:
        runs = runs.where(F.col("score_date") <= end)
    wanted = {r["run_id"] for r in runs.select("run_id").distinct().collect()}
    done = tables.read_table(spark, lake, "monitoring")
    if done is not None and not (start or end):  # the nights not yet monitored
        wanted -= {r["run_id"] for r in done.where(F.col("dataset") == dataset).select("run_id").distinct().collect()}
    return sorted(wanted)


def run_monitor(
    spark: SparkSession, lake: Lake, settings: Settings, *, start: str | None = None, end: str | None = None
) -> MonitorSummary:
    """Test the dataset's nights (see the module docstring); the summary names what moved, and by how much."""
    dataset, how = settings.dataset, settings.monitor
    card = _champion(spark, lake)
    every = tables.read_table(spark, lake, "predictions")
    mine = (
        None if every is None else every.where((F.col("dataset") == dataset) & (F.col("model_version") == card.version))
    )
    summary = MonitorSummary(dataset=dataset, model_version=card.version, nights=[], alerts=[])
    if mine is None or mine.isEmpty():
        summary["note"] = f"the champion {card.version} has not scored {dataset!r} yet: nothing to monitor"
        return summary
    ref_rows, ref_runs, described = _reference(spark, lake, mine, card, how.reference)
    kind, n = parse_reference(how.reference)
    complete = kind == "validation" or len(ref_runs) == n
    summary["reference"] = described if complete else f"{described}: building, call rates tested only"
    run = MonitorRun(settings, card, summary["reference"])
    nights = _nights(spark, lake, mine, dataset, start, end)
    if not nights:
        summary["note"] = "no night to monitor"
        return summary
    ref_dataset = dataset if kind == "nights" else _trained_on(spark, lake, card)
    reference = film_frame(spark, lake, ref_rows, ref_dataset, card.labels).drop_duplicates(["run_id", "image_id"])
    frame = film_frame(spark, lake, mine.where(F.col("run_id").isin(nights)), dataset, card.labels)
    rows = []
    for run_id in nights:
        night = frame[frame["run_id"] == run_id].drop_duplicates("image_id")
        whole = complete and run_id not in ref_runs  # a reference night is not tested against itself
        rows += _tested(run, run_id, night, reference if whole else None, summary)
    write_rows(spark, lake, rows)
    return summary


def _tested(
    run: MonitorRun, run_id: str, night: pd.DataFrame, reference: pd.DataFrame | None, summary: MonitorSummary
) -> list[dict[str, Any]]:
    """The rows of one night, its alerts added to ``summary``."""
    how, card = run.settings.monitor, run.card
    score_date = str(night["score_date"].iloc[0])
    base = {
        "dataset": run.dataset,
        "run_id": run_id,
        "score_date": score_date,
        "model_version": card.version,
        "films": len(night),
        "reference_films": 0 if reference is None else len(reference),
        "reference": run.reference,
        "monitored_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if len(night) < how.min_films:
        summary["nights"].append(
            {
                "run_id": run_id,
                "score_date": score_date,
                "films": len(night),
                "tested": False,
                "why": f"{len(night)} films, fewer than monitor.min_films ({how.min_films})",
            }
        )
        return [
            base
            | {
                "measure": "(night)",
                "kind": "night",
                "test": "none",
                "statistic": None,
                "p_value": None,
                "alert": False,
                "reference_value": "",
                "night_value": f"{len(night)} films: too few to test",
            }
        ]
    measured = measure_night(reference, night, card.labels, _expected_rates(card))
    alerts = drift.holm({m.measure: m.p_value for _, m in measured}, how.alpha)
    summary["nights"].append(
        {
            "run_id": run_id,
            "score_date": score_date,
            "films": len(night),
            "tested": True,
            "alerts": sorted(alerts),
            "measures": len(measured),
            "against": "the model card's validation call rates" if reference is None else f"{len(reference)} films",
        }
    )
    rows = []
    for kind, m in measured:
        row = base | {
            "measure": m.measure,
            "kind": kind,
            "test": TESTS[m.kind],
            "statistic": None if m.statistic != m.statistic else float(m.statistic),
            "p_value": float(m.p_value),
            "alert": m.measure in alerts,
            "reference_value": m.reference,
            "night_value": m.night,
        }
        rows.append(row)
        if row["alert"]:
            summary["alerts"].append(
                {k: row[k] for k in ("score_date", "run_id", "measure", "p_value", "reference_value", "night_value")}
            )
    return rows
