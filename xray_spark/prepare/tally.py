"""The prepare summary's numbers, each group of them from one Spark job instead of a job per number.

A Spark job costs about 0.1-0.3 s on a laptop however little it counts; the summary of a
run has some 30 numbers. Here they come from four aggregates: the metadata rows, the
files, the decoded images and the written store.
"""

from __future__ import annotations

import functools
from typing import Any

from pyspark.sql import Column, DataFrame, Row
from pyspark.sql import functions as F

from xray_spark.labels import FINDINGS, NO_FINDING
from xray_spark.prepare.metadata import findings_from_labels

#: The names every finding-count dictionary has, zero included.
FINDING_NAMES = (*FINDINGS, NO_FINDING)


def finding_sums(findings: Column, where: Column | None = None) -> list[Column]:
    """One sum per finding and one for ``No Finding`` (an empty or null array), over the rows ``where`` holds."""
    kept = F.lit(True) if where is None else where
    sums = [F.sum(F.when(kept & F.array_contains(findings, name), 1).otherwise(0)).alias(name) for name in FINDINGS]
    no_finding = F.coalesce(F.size(findings) <= 0, F.lit(True))
    return [*sums, F.sum(F.when(kept & no_finding, 1).otherwise(0)).alias(NO_FINDING)]


def finding_counts(row: Row | None) -> dict[str, int]:
    """The counts of :func:`finding_sums` from an aggregate's row (all zero for no row)."""
    return {name: int(row[name] or 0) if row is not None else 0 for name in FINDING_NAMES}


def count_findings(df: DataFrame) -> dict[str, int]:
    """Images per finding (all 14, zero included) and ``No Finding``, from a ``findings`` column."""
    return finding_counts(df.agg(*finding_sums(F.col("findings"))).first())


def metadata_tally(checked: DataFrame) -> dict[str, Any]:
    """Rows read, valid rows, their patients, implausible ages, views and findings, bad rows by reason.

    One ``ROLLUP(reason, view)``: ``reason`` is null for a valid row, so the (null, all
    views) group holds the valid rows' numbers, the (reason, all views) groups the bad rows
    by reason and the (null, view) groups the valid rows per view.
    """
    rows = (
        checked.rollup("reason", "view")
        .agg(
            F.grouping("reason").alias("_all_reasons"),
            F.grouping("view").alias("_all_views"),
            F.count("*").alias("_rows"),
            F.countDistinct("patient_id").alias("_patients"),
            F.sum(F.when(F.col("implausible_age"), 1).otherwise(0)).alias("_implausible"),
            *finding_sums(F.col("findings")),
        )
        .collect()
    )
    by_reason = [r for r in rows if not r["_all_reasons"]]
    valid = next((r for r in by_reason if r["reason"] is None and r["_all_views"]), None)
    return {
        "rows": sum(int(r["_rows"]) for r in rows if r["_all_reasons"]),
        "valid_rows": int(valid["_rows"]) if valid else 0,
        "patients": int(valid["_patients"]) if valid else 0,
        "implausible_ages_set_null": int(valid["_implausible"]) if valid else 0,
        "views": {r["view"]: int(r["_rows"]) for r in by_reason if r["reason"] is None and not r["_all_views"]},
        "finding_counts": finding_counts(valid),
        "bad_by_reason": {r["reason"]: int(r["_rows"]) for r in by_reason if r["reason"] and r["_all_views"]},
    }


def row_counts(**frames: DataFrame) -> dict[str, int]:
    """The number of rows of each frame, all from one job (a union of one tag column each)."""
    tagged = [df.select(F.lit(name).alias("_frame")) for name, df in frames.items()]
    union = functools.reduce(DataFrame.unionByName, tagged)
    counts = {r["_frame"]: int(r["count"]) for r in union.groupBy("_frame").count().collect()}
    return {name: counts.get(name, 0) for name in frames}


def decoded_tally(decoded: DataFrame) -> dict[str, Any]:
    """Good images, what they were converted from, those with a display picture, and the bad ones by reason: one
    job."""
    rows = (
        decoded.groupBy("reason", "converted")
        .agg(F.count("*").alias("count"), F.count("display").alias("displayed"))
        .collect()
    )
    good = [r for r in rows if r["reason"] is None]
    bad: dict[str, int] = {}
    for r in rows:
        if r["reason"] is not None:
            bad[r["reason"]] = bad.get(r["reason"], 0) + int(r["count"])
    return {
        "good": sum(int(r["count"]) for r in good),
        "display_pictures": sum(int(r["displayed"]) for r in good),
        "converted": {r["converted"]: int(r["count"]) for r in good if r["converted"]},
        "bad_by_reason": bad,
    }


def store_tally(store: DataFrame, unlabeled: str) -> dict[str, Any]:
    """The store's rows, images and patients per split, and its labelled images per finding: one job."""
    findings = findings_from_labels(F.col("finding_labels"))
    rows = (
        store.rollup("split")
        .agg(
            F.grouping("split").alias("_all"),
            F.count("*").alias("images"),
            F.countDistinct("patient_id").alias("patients"),
            *finding_sums(findings, where=F.col("split") != unlabeled),
        )
        .collect()
    )
    total = next((r for r in rows if r["_all"]), None)
    return {
        "store_rows": int(total["images"]) if total else 0,
        "splits": {
            r["split"]: {"patients": int(r["patients"]), "images": int(r["images"])} for r in rows if not r["_all"]
        },
        "store_finding_counts": finding_counts(total),
    }
