"""Load: the decoded rows into the Petastorm store, and the tables that mirror it.

The store is written through a staging folder and moved in (so a killed run leaves it
as it was); ``xray.studies`` and ``xray.boxes`` hold one partition per dataset, replaced
whole by each run.
"""

from __future__ import annotations

import logging

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from xray_spark import tables
from xray_spark.errors import UsageError
from xray_spark.lake import Lake
from xray_spark.prepare.metadata import findings_from_labels
from xray_spark.schema import BOXES_SCHEMA, STUDY_FIELDS, XraySchema
from xray_spark.session import temporary_conf

log = logging.getLogger(__name__)

#: Where a run's new store files are written before they move into the store.
STORE_STAGING = "_staging"


def write_store(
    spark: SparkSession,
    good: DataFrame,
    lake: Lake,
    dataset: str,
    run_id: str,
    *,
    append: bool,
    n_files: int,
    rowgroup_size_mb: int,
) -> None:
    """Write the store's rows with Petastorm's metadata (``materialize_dataset``).

    The rows are written to ``petastorm/_staging/<dataset>/<run_id>`` first and then moved
    into the store: an appended file at a time (a rename each), or the whole folder for a
    full run. A run killed while Spark writes leaves the store as it was; one killed while
    its files move leaves some new images in the store, each once, and the next
    ``--incremental`` run adds the rest. Writing straight into the store would not be safe:
    Spark's committer leaves ``_temporary`` behind in a killed append, and the next
    append's commit would merge those stale task files in as duplicates.
    """
    from petastorm.etl.dataset_metadata import materialize_dataset

    store_path = lake.path("petastorm", dataset)
    stale = lake.path("petastorm", STORE_STAGING, dataset)
    for leftover in (stale, f"{store_path}/_temporary"):
        if lake.exists(leftover):
            log.warning("removing %s, left by a run that did not finish", leftover)
            lake.delete_dir(leftover)
    staging = f"{stale}/{run_id}"
    columns = [f.name for f in XraySchema.as_spark_schema().fields]
    with materialize_dataset(spark, lake.store_url(dataset), XraySchema, rowgroup_size_mb):
        (
            good.select(*columns)
            .repartition(max(1, n_files))
            .sortWithinPartitions(XraySchema.image_id.name)
            .write.mode("overwrite")
            .option("compression", "none")
            .parquet(lake.url("petastorm", STORE_STAGING, dataset, run_id))
        )
        if append:
            for part in lake.list_files(staging, suffix=".parquet"):
                lake.move(part, f"{store_path}/{part.rsplit('/', 1)[1]}")
        else:
            replaced = f"{staging}-replaced"
            if lake.exists(store_path):
                lake.move(store_path, replaced)
            lake.move(staging, store_path)
            lake.delete_dir(replaced)
    lake.delete_dir(stale)


def store_image_ids(spark: SparkSession, store_url: str) -> DataFrame:
    return spark.read.parquet(store_url).select(XraySchema.image_id.name)


def refuse_removal(spark: SparkSession, store_url: str, kept_ids: DataFrame, dataset: str, what: str) -> None:
    """A full run must not remove studies from a non-empty store unless ``--replace`` says so."""
    existing = store_image_ids(spark, store_url)
    removed = existing.join(kept_ids, XraySchema.image_id.name, "left_anti").count()
    if removed:
        raise UsageError(
            f"this full prepare would remove {removed:,} of the {existing.count():,} studies in store {dataset!r} "
            f"({what}): pass --incremental to add to the store, or --replace to replace it"
        )


#: Columns ``xray.studies`` takes from ``xray.dicom_instances`` (null for an NIH film).
DICOM_STUDY_COLUMNS = {
    "study_datetime": "timestamp",
    "study_uid": "string",
    "series_uid": "string",
    "accession_number": "string",
}


def write_studies(spark: SparkSession, lake: Lake, dataset: str, store_url: str, source: str = "nih") -> int:
    """Rewrite this dataset's part of ``xray.studies`` from the store itself (so they always agree).

    ``source`` (``nih`` or ``dicom``) is recorded per row; a DICOM film also gets its study's
    date and time, its UIDs and its accession number from ``xray.dicom_instances``.
    """
    store = spark.read.parquet(store_url)
    studies = store.select(
        *STUDY_FIELDS,
        findings_from_labels(F.col("finding_labels")),
        F.lit(store_url).alias("store_path"),
        F.lit(source).alias("source"),
    )
    instances = tables.read_table(spark, lake, "dicom_instances") if source == "dicom" else None
    if instances is not None:
        mine = instances.where(F.col("dataset") == dataset).select("image_id", *DICOM_STUDY_COLUMNS)
        studies = studies.join(mine.dropDuplicates(["image_id"]), "image_id", "left")
    else:
        studies = studies.select("*", *(F.lit(None).cast(t).alias(c) for c, t in DICOM_STUDY_COLUMNS.items()))
    studies = studies.withColumn("dataset", F.lit(dataset))
    write_dataset_partition(spark, studies, lake, "studies", dataset)
    return tables.read_table(spark, lake, "studies").where(F.col("dataset") == dataset).count()


def write_dataset_partition(spark: SparkSession, df: DataFrame, lake: Lake, name: str, dataset: str) -> None:
    """Replace one dataset's partition of a table, leaving other datasets' rows alone.

    Dynamic partition overwrite only replaces partitions the new rows fall in: with no rows
    the old partition would stay, so an empty result removes it explicitly.
    """
    if df.isEmpty():
        lake.delete_dir(lake.path("tables", name, f"dataset={dataset}"))
        if tables.exists_in_lake(spark, lake, name):
            tables.register_table(spark, lake, name)
        else:
            spark.sql(f"DROP TABLE IF EXISTS {tables.qualified(name)}")
        return
    with temporary_conf(spark, "spark.sql.sources.partitionOverwriteMode", "dynamic"):
        df.write.mode("overwrite").partitionBy("dataset").parquet(lake.table_url(name))
    tables.register_table(spark, lake, name)


def write_boxes(spark: SparkSession, boxes: DataFrame, lake: Lake, dataset: str) -> None:
    write_dataset_partition(spark, boxes.select(*BOXES_SCHEMA.fieldNames()), lake, "boxes", dataset)


def write_list(df: DataFrame, folder: str) -> None:
    """A report list (missing images, orphans, quarantine) as one CSV with a header."""
    df.coalesce(1).write.mode("overwrite").option("header", "true").csv(folder)
