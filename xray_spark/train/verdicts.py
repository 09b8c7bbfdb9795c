"""Training on readers' verdicts: a labelled copy of the store where verdicts label the films.

With ``train.verdicts``, the films of the dataset that have a label (from the NIH CSV or a DICOM
labels CSV) or a complete verdict in ``xray.verdicts`` are written, with Petastorm's metadata,
to ``petastorm/_labelled/<dataset>-<version>``: verdicts' labels replace the CSV's where the rule lets them, and a film
labelled only by verdicts gets its split from the patient hash, as prepare gives labelled films
(:mod:`xray_spark.splits`). Training, its validation and its thresholds then read that copy; the
store itself is never changed. The copy holds only labelled films, so its size is that of what
readers and labels files cover, not of the archive. Which verdicts label which films is the
site's rule, set before (:mod:`xray_spark.train.verdict_labels`); a reader flagged as far from everyone
else refuses the run unless ``train.verdicts_flagged`` says to leave them out or use them.
"""

from __future__ import annotations

import logging
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from xray_spark.config import Settings
from xray_spark.errors import UsageError
from xray_spark.labels import NO_FINDING
from xray_spark.lake import Lake, tables
from xray_spark.lake.schema import XraySchema
from xray_spark.splits import UNLABELED, hash_split
from xray_spark.train.verdict_labels import film_labels, reader_agreement

log = logging.getLogger("xray_spark.train")


def labelled_store(spark: SparkSession, lake: Lake, settings: Settings, labels: list[str], version: str) -> dict:
    """Write the verdict-labelled copy of the dataset's store; its URL and counts."""
    from petastorm.etl.dataset_metadata import materialize_dataset

    dataset = settings.dataset
    table = tables.read_table(spark, lake, "verdicts")
    if table is None:
        raise UsageError("train.verdicts is set but the lake has no xray.verdicts: run jobs/verdicts.py first")
    rows = [
        r.asDict() for r in table.where((F.col("dataset") == dataset) & F.col("current") & F.col("complete")).collect()
    ]
    csv = csv_findings(spark, lake, dataset)
    readers = reader_agreement(rows, labels, csv)
    rows = _without_flagged(rows, readers, settings.train.verdicts_flagged)
    t = settings.train
    by_film = film_labels(
        rows,
        labels,
        csv_labelled=csv,
        min_readers=t.verdicts_min_readers,
        min_readers_over_csv=t.verdicts_min_readers_over_csv,
    )
    if not by_film:
        raise UsageError(
            f"no film of dataset {dataset!r} is labelled by xray.verdicts under train.verdicts_min_readers="
            f"{t.verdicts_min_readers} and train.verdicts_min_readers_over_csv={t.verdicts_min_readers_over_csv}"
        )
    findings = [F.when(F.substring("v_labels", i + 1, 1) == "1", F.lit(f)) for i, f in enumerate(labels)]
    text = F.concat_ws("|", *findings)
    verdicts = spark.createDataFrame(
        [(k, v, n) for k, (v, n) in by_film.items()], "image_id string, v_labels string, readers int"
    )
    store = spark.read.parquet(lake.store_url(dataset))
    joined = store.join(F.broadcast(verdicts), "image_id", "left")
    has = F.col("v_labels").isNotNull()
    labelled = joined.where(has | (F.col("split") != UNLABELED)).select(
        *[
            F.when(has, F.col("v_labels")).otherwise(F.col(c)).alias(c) if c == XraySchema.labels.name
            else F.when(has, F.when(text == "", F.lit(NO_FINDING)).otherwise(text)).otherwise(F.col(c)).alias(c)
            if c == XraySchema.finding_labels.name
            else F.when(has & (F.col("split") == UNLABELED), hash_split(F.col("patient_id"), settings.split))
            .otherwise(F.col(c)).alias(c) if c == XraySchema.split.name
            else F.col(c)
            for c in store.columns
        ]
    )  # fmt: skip
    url = lake.url_of(lake.path("petastorm", "_labelled", f"{dataset}-{version}"))
    with materialize_dataset(spark, url, XraySchema, settings.prepare.rowgroup_size_mb):
        labelled.repartition(max(1, settings.train.num_workers)).write.mode("overwrite").option(
            "compression", "none"
        ).parquet(url)
    counts = {
        r["split"]: int(r["n"])
        for r in spark.read.parquet(url).groupBy("split").count().withColumnRenamed("count", "n").collect()
    }
    summary: dict[str, Any] = {
        "store_url": url,
        "films_with_verdicts": len(by_film),
        "csv_labels_replaced": sum(k in csv for k in by_film),
        "readers": readers,
        "films_with_disagreeing_readers": _disagreements(rows, labels),
        "films_per_split": counts,
    }
    log.info("verdict-labelled copy of %s: %s", dataset, summary)
    return summary


def csv_findings(spark: SparkSession, lake: Lake, dataset: str) -> dict[str, list[str]]:
    """image_id -> findings of the films of ``dataset`` that a labels CSV labels (``xray.studies``)."""
    studies = tables.read_table(spark, lake, "studies")
    if studies is None:
        return {}
    labelled = studies.where((F.col("dataset") == dataset) & (F.col("split") != UNLABELED))
    return {r["image_id"]: list(r["findings"] or ()) for r in labelled.select("image_id", "findings").collect()}


def _without_flagged(rows: list[dict], readers: list[dict], how: str) -> list[dict]:
    """The verdicts training may use, by ``train.verdicts_flagged``: a flagged reader refuses the run, or is left
    out, or is used."""
    flagged = {r["reader"]: r for r in readers if r["flagged"]}
    if not flagged:
        return rows
    said = "; ".join(
        f"{name}: kappa {r['kappa']:.2f} on {r['films']} films, {r['positives_per_film']:g} positives per film"
        for name, r in flagged.items()
    )
    if how == "refuse":
        raise UsageError(
            f"readers whose verdicts agree with the labels CSV, the other readers and the model no better than chance "
            f"({said}): look at their verdicts; then train with train.verdicts_flagged=exclude (or include)"
        )
    log.warning("readers flagged (%s): their verdicts are %s", said, "left out" if how == "exclude" else "used")
    return [r for r in rows if r["reader"] not in flagged] if how == "exclude" else rows


def _disagreements(rows: list[Any], labels: list[str]) -> int:
    """Films whose readers' complete verdicts do not all give the same labels."""
    seen: dict[str, set[str]] = {}
    for r in rows:
        one = film_labels([r], labels)
        if one:
            seen.setdefault(r["image_id"], set()).add(next(iter(one.values()))[0])
    return sum(len(v) > 1 for v in seen.values())
