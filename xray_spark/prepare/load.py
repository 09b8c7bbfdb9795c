"""Load: the decoded rows into the Petastorm store, and the tables that mirror it.

The store is written through a staging folder and moved in (so a killed run leaves it
as it was); ``xray.studies`` and ``xray.boxes`` hold one partition per dataset, replaced
whole by each run.

A full run swaps the whole store folder: the old store is moved aside, the new one moved
in, then the manifest written. A journal (``petastorm/_staging/<dataset>.replace.json``),
written before the first move and removed after the manifest, lets the next run of any
kind finish or undo a swap that was killed half-way (:func:`recover_replace`) before it
reads the store: a store is never found without its manifest and taken for empty.
"""

from __future__ import annotations

import logging
import os

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from xray_spark import locks
from xray_spark.errors import UsageError
from xray_spark.lake import Lake, catalog, same_volume, tables
from xray_spark.lake import store as store_mod
from xray_spark.lake.schema import STUDY_FIELDS, XraySchema
from xray_spark.prepare.metadata import findings_from_labels
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
    check_volumes(lake, dataset, append=append)
    if append and lake.is_local and not same_volume(stale, store_path):  # the store is on another disk
        stale = f"{store_path}/{STORE_STAGING}"  # staged beside it: each file's move stays a rename
    for leftover in (stale, f"{store_path}/_temporary", f"{store_path}/{STORE_STAGING}"):
        if lake.exists(leftover):
            log.warning("removing %s, left by a run that did not finish", leftover)
            lake.delete_dir(leftover)
    staging = f"{stale}/{run_id}"
    staging_url = lake.url_of(staging)
    columns = [f.name for f in XraySchema.as_spark_schema().fields]
    with materialize_dataset(spark, lake.store_url(dataset), XraySchema, rowgroup_size_mb):
        (
            good.select(*columns)
            .repartition(max(1, n_files))
            .sortWithinPartitions(XraySchema.image_id.name)
            .write.mode("overwrite")
            .option("compression", "none")
            .parquet(staging_url)
        )
        if append:
            for part in lake.list_files(staging, suffix=".parquet"):
                lake.move(part, f"{store_path}/{part.rsplit('/', 1)[1]}")
        else:
            swap_store(lake, dataset, staging, run_id)
    if append:
        lake.delete_dir(stale)


def swap_store(lake: Lake, dataset: str, staging: str, run_id: str) -> None:
    """The full run's swap: the old store aside, the new one in, with a journal and with no reader in between."""
    store_path = lake.path("petastorm", dataset)
    replaced = f"{staging}-replaced"
    with locks.store_replacer(lake, dataset, job="prepare"):
        had_store = lake.exists(store_path)
        journal = {"run_id": run_id, "replaced": replaced, "had_store": had_store}
        lake.write_json(replace_journal(lake, dataset), journal)
        if had_store:
            lake.move(store_path, replaced)
        lake.move(staging, store_path)


def check_volumes(lake: Lake, dataset: str, *, append: bool) -> None:
    """A full run swaps the store's folder with renames: refused, in one line, for a store on another volume."""
    store_path = lake.path("petastorm", dataset)
    if append or not lake.is_local or not os.path.isdir(store_path):
        return
    if os.path.islink(store_path) or not same_volume(lake.path("petastorm"), store_path):
        raise UsageError(
            f"store {dataset!r} lies on another volume ({os.path.realpath(store_path)}): a full run replaces the "
            "store folder by renames within the lake's volume; run --incremental, or move the store back first"
        )


def replace_journal(lake: Lake, dataset: str) -> str:
    return lake.path("petastorm", STORE_STAGING, f"{dataset}.replace.json")


def finish_replace(lake: Lake, dataset: str) -> None:
    """After the new store's manifest is written: the old store and the journal go."""
    lake.delete_dir(lake.path("petastorm", STORE_STAGING, dataset))
    lake.delete_file(replace_journal(lake, dataset))


def recover_replace(lake: Lake, dataset: str) -> str | None:
    """Finish or undo a store swap that a killed full run left half-done; what was done, or None.

    Finished when the new store's manifest records the run (only the clean-up was left);
    otherwise undone: the new files go and the old store moves back.
    """
    journal = replace_journal(lake, dataset)
    if not lake.exists(journal):
        return None
    entry = lake.read_json(journal)
    store_path = lake.path("petastorm", dataset)
    manifest = store_mod.read_manifest(lake, dataset)
    if manifest is not None and manifest.runs and manifest.runs[-1].get("run_id") == entry["run_id"]:
        done = "finished"
    elif lake.exists(entry["replaced"]):  # the old store is aside: the new one never got its manifest
        lake.delete_dir(store_path)
        lake.move(entry["replaced"], store_path)
        done = "undone (the store before it is back)"
    elif not entry["had_store"]:  # a first full run: its store never got its manifest
        lake.delete_dir(store_path)
        done = "undone (there was no store before it)"
    else:  # killed before the old store moved: it is still in place
        done = "undone (the store was never moved)"
    finish_replace(lake, dataset)
    log.warning(
        "store %r: the full run %s was killed while it swapped the store; its swap was %s",
        dataset,
        entry["run_id"],
        done,
    )
    return done


def refuse_unmanifested(lake: Lake, dataset: str) -> None:
    """A store folder with files and no manifest is refused, never taken for an empty store."""
    if store_mod.read_manifest(lake, dataset) is None and lake.list_files(lake.path("petastorm", dataset), ".parquet"):
        raise UsageError(
            f"store {dataset!r} at {lake.path('petastorm', dataset)} holds Parquet files but no manifest "
            f"({store_mod.MANIFEST_NAME}): it is not treated as empty; restore the manifest, or move the folder "
            "away and run a full prepare"
        )


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


def write_studies(
    spark: SparkSession, lake: Lake, dataset: str, store_url: str, source: str = "nih", *, empty: bool | None = None
) -> int:
    """Rewrite this dataset's part of ``xray.studies`` from the store itself (so they always agree).

    ``source`` (a name of :data:`~xray_spark.prepare.sources.SOURCES`) is recorded per row; a DICOM
    film also gets its study's date and time, its UIDs and its accession number from ``xray.dicom_instances``.
    ``empty``: whether the store is, where the caller has counted it already (else asked of the rows).
    """
    store = spark.read.parquet(store_url)
    studies = store.select(
        *STUDY_FIELDS,
        findings_from_labels(F.col("finding_labels")),
        F.lit(store_url).alias("store_path"),
        F.lit(source).alias("source"),
    )
    instances = tables.read_table(spark, lake, "dicom_instances")  # none of its rows are an NIH dataset's
    if instances is not None:
        mine = instances.where(F.col("dataset") == dataset).select("image_id", *DICOM_STUDY_COLUMNS)
        studies = studies.join(mine.dropDuplicates(["image_id"]), "image_id", "left")
    else:
        studies = studies.select("*", *(F.lit(None).cast(t).alias(c) for c, t in DICOM_STUDY_COLUMNS.items()))
    studies = studies.withColumn("dataset", F.lit(dataset))
    write_dataset_partition(spark, studies, lake, "studies", dataset, empty=empty)
    return tables.read_table(spark, lake, "studies").where(F.col("dataset") == dataset).count()


def write_display_pictures(
    spark: SparkSession, good: DataFrame, lake: Lake, dataset: str, run_id: str, *, append: bool
) -> None:
    """The good films' display pictures (and the notes of those that have none) into ``xray.display_pictures``:
    appended beside an appending run's store, the dataset's part replaced beside a replacing one."""
    rows = good.select(
        F.col("image_id"),
        F.col("display").alias("picture"),
        F.col("display_note").alias("note"),
        F.lit(run_id).alias("run_id"),
        F.lit(dataset).alias("dataset"),
    ).where(F.col("picture").isNotNull() | F.col("note").isNotNull())
    rows = rows.repartition(max(1, spark.sparkContext.defaultParallelism)).sortWithinPartitions("image_id")
    if append:
        with tables.table_writer(lake, "display_pictures"):
            rows.write.mode("append").partitionBy("dataset").parquet(lake.table_url("display_pictures"))
        tables.register_table(spark, lake, "display_pictures")
    else:
        write_dataset_partition(spark, rows, lake, "display_pictures", dataset)
    return (
        tables.read_table(spark, lake, "display_pictures")
        .where((F.col("dataset") == dataset) & (F.col("run_id") == run_id) & F.col("picture").isNotNull())
        .count()
    )


def write_dataset_partition(
    spark: SparkSession, df: DataFrame, lake: Lake, name: str, dataset: str, *, empty: bool | None = None
) -> None:
    """Replace one dataset's partition of a table, leaving other datasets' rows alone.

    Dynamic partition overwrite only replaces partitions the new rows fall in: with no rows
    the old partition would stay, so an empty result removes it explicitly. ``empty``: whether ``df`` has no rows,
    where the caller knows (asking the rows costs a Spark job that computes them up to the first).
    """
    if df.isEmpty() if empty is None else empty:
        with tables.table_writer(lake, name):
            lake.delete_dir(lake.path("tables", name, f"dataset={dataset}"))
        if tables.exists_in_lake(spark, lake, name):
            tables.register_table(spark, lake, name)
        else:
            spark.sql(f"DROP TABLE IF EXISTS {tables.qualified(name)}")
        return
    with tables.table_writer(lake, name), temporary_conf(spark, "spark.sql.sources.partitionOverwriteMode", "dynamic"):
        df.write.mode("overwrite").partitionBy("dataset").parquet(lake.table_url(name))
    tables.register_table(spark, lake, name)


def write_boxes(spark: SparkSession, boxes: DataFrame, lake: Lake, dataset: str) -> None:
    write_dataset_partition(spark, boxes.select(*catalog.table("boxes").column_names()), lake, "boxes", dataset)


def write_list(df: DataFrame, folder: str) -> None:
    """A report list (missing images, orphans, quarantine) as one CSV with a header."""
    df.coalesce(1).write.mode("overwrite").option("header", "true").option("escape", '"').csv(folder)  # RFC 4180
