"""Labels for some of a DICOM archive's films: a CSV keyed by Accession Number or SOP Instance UID.

``--labels CSV`` has a ``Finding Labels`` column in the NIH spelling (``Effusion|Mass``,
``No Finding``) and either an ``Accession Number`` column (every film of the study gets
the labels) or a ``SOP Instance UID`` column (one film). Labelled films get
patient-level splits like NIH rows, so a model can be evaluated on, or fine-tuned with,
the hospital's own patients; the others stay ``unlabeled``. A label that names an
unknown finding, or No Finding beside a finding, quarantines its film; so do rows that give
one key different labels (the same labels twice are one row).
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from xray_spark.config import SplitSettings
from xray_spark.errors import UsageError
from xray_spark.imaging.reasons import CONTRADICTORY_LABELS, UNKNOWN_FINDING
from xray_spark.labels import NO_FINDING
from xray_spark.prepare.metadata import findings_array, rfc4180
from xray_spark.splits import UNLABELED, hash_split

KEYS = {"accessionnumber": "accession_number", "sopinstanceuid": "image_id"}


def read_labels(spark: SparkSession, path: str) -> tuple[DataFrame, str]:
    """(rows of key, ``labels_raw`` and ``conflict``, the candidates' column the key matches).

    ``conflict`` is set (the labels given, for the quarantine's detail) where rows give the key different labels.
    """
    raw = rfc4180(spark).csv(path)
    names = {c.strip().lower().replace(" ", "").replace("_", ""): c for c in raw.columns}
    keys = [k for k in KEYS if k in names]
    if "findinglabels" not in names or len(keys) != 1:
        raise UsageError(
            f"labels file {path} needs a 'Finding Labels' column and one of 'Accession Number' or "
            f"'SOP Instance UID'; it has {', '.join(raw.columns) or 'no columns'}"
        )
    column = KEYS[keys[0]]
    rows = raw.select(
        F.trim(F.col(f"`{names[keys[0]]}`")).alias(column), F.col(f"`{names['findinglabels']}`").alias("labels_raw")
    ).where(F.col(column).isNotNull() & (F.col(column) != ""))
    findings, _ = findings_array(F.col("labels_raw"))
    rows = rows.withColumn("_same", F.array_join(F.array_sort(findings), "|"))
    grouped = rows.groupBy(column).agg(
        F.first("labels_raw").alias("labels_raw"),
        F.count_distinct("_same").alias("_n"),
        F.array_join(F.array_sort(F.collect_set("labels_raw")), " / ").alias("_given"),
    )
    conflict = F.when(F.col("_n") > 1, F.col("_given"))
    return grouped.select(column, "labels_raw", conflict.alias("conflict")), column


def apply_labels(
    candidates: DataFrame, labels: DataFrame, key: str, split: SplitSettings
) -> tuple[DataFrame, DataFrame]:
    """(candidates with labels and splits where labelled, quarantine rows for films with bad labels)."""
    joined = candidates.join(labels, key, "left")
    findings, unknown = findings_array(F.col("labels_raw"))
    labelled = F.col("labels_raw").isNotNull()
    conflicting = F.col("conflict").isNotNull()
    reason = (
        F.when(conflicting, F.lit(CONTRADICTORY_LABELS))
        .when(labelled & (F.size(unknown) > 0), F.lit(UNKNOWN_FINDING))
        .when(labelled & F.array_contains(findings, NO_FINDING), F.lit(CONTRADICTORY_LABELS))
    )
    marked = joined.withColumn("_reason", reason).withColumn("_findings", findings)
    detail = F.when(
        conflicting, F.concat(F.lit("the labels file gives this film different Finding Labels: "), F.col("conflict"))
    ).otherwise(F.concat(F.lit("Finding Labels is "), F.col("labels_raw")))
    bad = marked.where(F.col("_reason").isNotNull()).select(
        "image_id", "source_path", F.col("_reason").alias("reason"), detail.alias("detail")
    )
    good = marked.where(F.col("_reason").isNull())
    text = F.when(F.size("_findings") > 0, F.concat_ws("|", "_findings")).otherwise(F.lit(NO_FINDING))
    good = good.select(
        *(c for c in candidates.columns if c not in ("split", "finding_labels", "findings", "conflict")),
        F.when(labelled, hash_split(F.col("patient_id"), split)).otherwise(F.lit(UNLABELED)).alias("split"),
        F.when(labelled, text).otherwise(F.lit("")).alias("finding_labels"),
        F.when(labelled, F.col("_findings")).otherwise(F.array().cast("array<string>")).alias("findings"),
    )
    return good, bad
