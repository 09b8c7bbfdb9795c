"""The DICOM source: from a folder of DICOM files to the candidates to decode.

:func:`read` is this source's read, check and match steps: it lists
every file, reads the headers on the executors (:mod:`~xray_spark.prepare.sources.dicom.headers`),
sets aside what is not DICOM, what is skipped and what is broken, keeps one file per SOP
Instance UID, gives each pseudonymous patient a numeric id (``xray.patient_keys``) and
each film its follow-up number (by study date and time), labels the films a ``--labels``
CSV names (:mod:`~xray_spark.prepare.sources.dicom.labels`) and marks the others ``unlabeled``:
never trained or evaluated on, always scored.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import pandas as pd
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from xray_spark import privacy, spool
from xray_spark.config import Settings
from xray_spark.errors import UsageError
from xray_spark.imaging.reasons import BAD_PATIENT_ID, MISSING_IMAGE_ID
from xray_spark.lake import local_path, tables
from xray_spark.prepare import load, tally
from xray_spark.prepare.files import printable, real_path, walk_local
from xray_spark.prepare.label_set import choose_labels, configured_labels
from xray_spark.prepare.run import (
    CheckedMetadata,
    ImageCounts,
    MatchedFiles,
    MetadataCounts,
    PrepareInputs,
    PrepareRun,
    SourceRecord,
    write_sections,
)
from xray_spark.prepare.sources.dicom.headers import read_headers
from xray_spark.prepare.sources.dicom.labels import apply_labels, read_labels
from xray_spark.splits import UNLABELED

log = logging.getLogger(__name__)

PATIENT_KEYS = "patient_keys"
INSTANCES = "dicom_instances"
#: ``xray.dicom_instances``: the kept header attributes of every stored DICOM film.
INSTANCE_COLUMNS = (
    "image_id",
    "study_uid",
    "series_uid",
    "accession_number",
    "patient_pseudonym",
    "study_datetime",
    "modality",
    "body_part",
    "photometric",
    "bits_stored",
    "transfer_syntax",
    "manufacturer",
    "model_name",
)


def list_all_files(run: PrepareRun, key: bytes) -> DataFrame:
    """Every file under the images folder, whatever its name (DICOM exports often have no suffix).

    Each file's ``source_path`` is its opaque reference (:func:`privacy.source_ref`); the
    path itself (``read_path``) goes only to the executors and to the identity map, outside the lake.
    """
    folder, paths = _files_to_read(run.inputs)
    refs = [privacy.source_ref(key, os.path.relpath(real_path(path), folder)) for path in paths]
    run.images_ref = privacy.source_ref(key, os.path.abspath(folder))
    lake_root = run.lake.root if run.lake.is_local else None
    shown = [printable(real_path(path)) for path in paths]
    rows = [(run.images_ref, os.path.abspath(folder)), *zip(refs, shown, strict=True)]
    where = privacy.write_identity_map(run.settings.privacy, lake_root, run.dataset, run.run_id, rows)
    log.info("identity map of this run's %d files (outside the lake): %s", len(paths), where)
    schema = T.StructType([T.StructField("source_path", T.StringType()), T.StructField("read_path", T.StringType())])
    return run.spark.createDataFrame(pd.DataFrame({"source_path": refs, "read_path": paths}), schema)


def _files_to_read(inputs) -> tuple[str, list[str]]:
    """(folder, files): every file under ``--images``; of a DICOM node's spool, those no night has ingested."""
    folder = local_path(inputs.images)
    if folder is None:
        raise UsageError("a DICOM source is read from a local or mounted folder: pass --images DIR")
    if not os.path.isdir(folder):
        raise UsageError(f"images folder {folder} does not exist or is not a folder: pass --images DIR")
    if spool.is_spool(folder):
        received = spool.Spool(os.path.abspath(folder))
        return received.incoming, list(inputs.files) if inputs.files is not None else received.pending()
    if inputs.files is not None:
        return folder, list(inputs.files)
    return folder, [path for _, path in walk_local(folder, suffixes=None)]


def tonight(folder: Path, settings: Settings) -> PrepareInputs:
    """A night's DICOM files: every file under ``folder``; of the DICOM node's spool, what no night has ingested."""
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder: nothing was ingested or scored")
    files = None
    if spool.is_spool(str(folder)):  # the node's spool: what no night has ingested yet
        files = tuple(spool.open_spool(str(folder), local_path(settings.lake), create=False).pending())
    return PrepareInputs(metadata=None, images=str(folder), incremental=True, source="dicom", files=files)


def read(run: PrepareRun) -> SourceRecord:
    """The headers read and the films sorted; unlabelled films ``unlabeled``; the label set."""
    metadata, matched = read_dicom(run)
    # Without a labels CSV there are no labels to count: the configured findings.
    label_set = choose_labels(run) if run.inputs.labels or run.appends else configured_labels(run)
    run.summary["mode"] = "incremental" if run.inputs.incremental else "full"
    run.phase("headers")
    return SourceRecord(metadata, matched, label_set, after_store=write_instances)


def read_dicom(run: PrepareRun) -> tuple[CheckedMetadata, MatchedFiles]:
    """Headers read, films sorted into candidates, skipped, broken and duplicates; the summary's counts."""
    key = privacy.key_for_lake(run.settings.privacy, run.lake)
    run.key_fingerprint = privacy.key_fingerprint(key)
    if not run.inputs.replace:  # a --replace pseudonymises the whole store anew
        privacy.check_same_key(run.key_fingerprint, run.manifest and run.manifest.key_fingerprint, run.dataset)
    files = list_all_files(run, key)
    n_files = files.count()
    n_partitions = max(run.spark.sparkContext.defaultParallelism, math.ceil(n_files / 500))
    image = run.settings.image
    headers = run.keep(read_headers(files, key, image.max_file_bytes, n_partitions, image.max_decoded_bytes))
    kinds, n_objects, by_skip = _header_tally(headers)
    objects = headers.where(F.col("kind").isin("dicom", "unknown"))
    broken = objects.where(F.col("reason").isNotNull())
    valid = objects.where(F.col("reason").isNull())
    skipped = valid.where(F.col("skip_reason").isNotNull())
    if by_skip:
        columns = ("source_path", "sop_uid", "modality", "skip_reason", "skip_detail")
        load.write_list(skipped.select(*columns), f"{run.report_dir}/skipped")
    films, bad_ids = _check_ids(valid.where(F.col("skip_reason").isNull()))
    films, duplicates = _one_file_per_instance(films)
    already, frames = 0, {"duplicates": duplicates}
    if run.appends:
        stored = load.store_image_ids(run.spark, run.store_url).withColumnRenamed("image_id", "sop_uid")
        frames["already"] = films.join(stored, "sop_uid", "left_semi")
        films = films.join(stored, "sop_uid", "left_anti")
    counted = tally.row_counts(**frames)  # one job for both
    n_duplicates, already = counted["duplicates"], counted.get("already", 0)
    if n_duplicates:
        load.write_list(duplicates.select("sop_uid", "source_path"), f"{run.report_dir}/duplicate_files")
    candidates = _candidates(run, films)
    bad = broken.select(F.col("sop_uid").alias("image_id"), "source_path", "reason", "detail").unionByName(bad_ids)
    if run.inputs.labels:
        rows, key = read_labels(run.spark, run.inputs.labels)
        candidates, bad_labels = apply_labels(candidates, rows, key, run.settings.split)
        bad = bad.unionByName(bad_labels)
    candidates = run.keep(candidates)
    views, n_patients = _candidate_tally(candidates)
    n_candidates = sum(views.values())
    rows_read = n_objects - sum(by_skip.values()) - n_duplicates - already
    counts = {"files": n_files, "kinds": kinds, "skipped": by_skip, "duplicates": n_duplicates, "already": already}
    _summarise(run, counts, candidates, (n_candidates, n_patients, views), rows_read)
    checked = CheckedMetadata(checked=candidates, valid=candidates, bad=bad, rows_read=rows_read)
    return checked, MatchedFiles(candidates, n_candidates, 0, n_files)


def _header_tally(headers: DataFrame) -> tuple[dict[str, int], int, dict[str, int]]:
    """Files per kind, the DICOM objects among them, and the readable ones skipped per reason: one job."""
    rows = headers.groupBy("kind", F.col("reason").isNull().alias("_read"), "skip_reason").count().collect()
    kinds: dict[str, int] = {}
    for r in rows:
        kinds[r["kind"]] = kinds.get(r["kind"], 0) + int(r["count"])
    objects = [r for r in rows if r["kind"] in ("dicom", "unknown")]
    by_skip: dict[str, int] = {}
    for r in objects:
        if r["_read"] and r["skip_reason"] is not None:
            by_skip[r["skip_reason"]] = by_skip.get(r["skip_reason"], 0) + int(r["count"])
    return kinds, sum(int(r["count"]) for r in objects), by_skip


def _candidate_tally(candidates: DataFrame) -> tuple[dict[str, int], int]:
    """Films per view and the patients they belong to: one job."""
    rows = candidates.groupBy("view").agg(F.count("*").alias("n"), F.collect_set("patient_id").alias("p")).collect()
    return {r["view"]: int(r["n"]) for r in rows}, len(set().union(*(r["p"] for r in rows)))


def _summarise(run: PrepareRun, counts: dict, candidates: DataFrame, tallied: tuple, rows_read: int) -> None:
    """The run summary's ``dicom``, ``metadata`` and ``images`` sections (counts only, nothing identifying)."""
    n_candidates, n_patients, views = tallied
    kinds, already, n_files, n_duplicates = counts["kinds"], counts["already"], counts["files"], counts["duplicates"]
    by_skip = counts["skipped"]
    run.summary["dicom"] = {
        "files_found": n_files,
        "dicom_files": kinds.get("dicom", 0),
        "dicomdir_files": kinds.get("dicomdir", 0),
        "not_dicom_files": kinds.get("not_dicom", 0),
        "skipped": by_skip,
        "duplicate_instances": n_duplicates,
        "already_in_store": already,
    }
    labelled = candidates.where(F.col("split") != UNLABELED)
    metadata = MetadataCounts(
        file=run.images_ref,  # the folder's reference: its path may name a patient
        rows=rows_read + already,
        rows_considered=rows_read,
        already_in_store=already,
        valid_rows=n_candidates,
        patients=n_patients,
        views=views,
        finding_counts=tally.count_findings(labelled) if run.inputs.labels else {},
    )
    images = ImageCounts(run.images_ref, n_files, n_candidates, kinds.get("not_dicom", 0), n_duplicates)
    write_sections(run, metadata=metadata, images=images)


def _check_ids(films: DataFrame) -> tuple[DataFrame, DataFrame]:
    """Films with a SOP Instance UID and a Patient ID; the others as quarantine rows."""
    reason = F.when(F.col("sop_uid").isNull(), F.lit(MISSING_IMAGE_ID)).when(
        F.col("patient_pseudonym").isNull(), F.lit(BAD_PATIENT_ID)
    )
    detail = F.when(F.col("sop_uid").isNull(), F.lit("no SOP Instance UID")).otherwise(F.lit("no Patient ID"))
    marked = films.withColumn("_reason", reason)
    bad = marked.where(F.col("_reason").isNotNull()).select(
        F.col("sop_uid").alias("image_id"), "source_path", F.col("_reason").alias("reason"), detail.alias("detail")
    )
    return marked.where(F.col("_reason").isNull()).drop("_reason"), bad


def _one_file_per_instance(films: DataFrame) -> tuple[DataFrame, DataFrame]:
    """The same SOP instance exported twice is stored once: the first path in sorted order."""
    ranked = films.withColumn("_copy", F.row_number().over(Window.partitionBy("sop_uid").orderBy("read_path")))
    return ranked.where(F.col("_copy") == 1).drop("_copy"), ranked.where(F.col("_copy") > 1).drop("_copy")


def _candidates(run: PrepareRun, films: DataFrame) -> DataFrame:
    """The films in the shape decode takes: numeric patient ids, follow-ups, split ``unlabeled``."""
    with_ids = films.join(patient_ids(run, films), "patient_pseudonym")
    before = F.lit(0)
    if run.appends:
        counts = run.spark.read.parquet(run.store_url).groupBy("patient_id").agg(F.count("*").alias("_before"))
        with_ids = with_ids.join(counts, "patient_id", "left")
        before = F.coalesce(F.col("_before"), F.lit(0))
    order = Window.partitionBy("patient_id").orderBy(F.col("study_datetime").asc_nulls_last(), "sop_uid")
    return with_ids.select(
        F.col("sop_uid").alias("image_id"),
        "patient_id",
        (before + F.row_number().over(order) - 1).cast("int").alias("follow_up"),
        "age",
        "sex",
        "view",
        "original_width",
        "original_height",
        "pixel_spacing_x",
        "pixel_spacing_y",
        F.lit(UNLABELED).alias("split"),
        F.lit("").alias("finding_labels"),
        F.array().cast("array<string>").alias("findings"),
        "source_path",
        "read_path",
        *(c for c in INSTANCE_COLUMNS if c not in ("image_id",)),
    )


def patient_ids(run: PrepareRun, films: DataFrame) -> DataFrame:
    """(patient_pseudonym, patient_id) for the films' pseudonyms: kept ids, new ones numbered after them."""
    spark, dataset = run.spark, run.dataset
    table = tables.read_table(spark, run.lake, PATIENT_KEYS)
    schema = "patient_pseudonym string, patient_id int"
    existing = table.where(F.col("dataset") == dataset).select("patient_pseudonym", "patient_id") if table else None
    existing = (existing if existing is not None else spark.createDataFrame([], schema)).localCheckpoint()
    start = existing.agg(F.max("patient_id")).first()[0] or 0
    new = films.select("patient_pseudonym").distinct().join(existing, "patient_pseudonym", "left_anti")
    new = new.withColumn(
        "patient_id", (F.lit(start) + F.row_number().over(Window.orderBy("patient_pseudonym"))).cast("int")
    )
    new = new.localCheckpoint()
    if not new.isEmpty():
        tables.write_table_partitioned(new.withColumn("dataset", F.lit(dataset)), run.lake, PATIENT_KEYS)
    return existing.unionByName(new)


def write_instances(run: PrepareRun, good: DataFrame, candidates: DataFrame) -> None:
    """The kept header attributes of this run's stored films, added to ``xray.dicom_instances``; where each
    came from, outside the lake (:func:`privacy.write_film_map`, for delivery back to the PACS)."""
    films = good.select("image_id", "pixel_sha256").join(candidates.select("image_id", "read_path"), "image_id")
    lake_root = run.lake.root if run.lake.is_local else None
    located = ((r["image_id"], real_path(r["read_path"]), r["pixel_sha256"]) for r in films.toLocalIterator())
    where = privacy.write_film_map(run.settings.privacy, lake_root, run.dataset, run.run_id, located)
    log.info("film map of this run's stored films (outside the lake): %s", where)
    rows = candidates.join(good.select("image_id"), "image_id", "left_semi").select(*INSTANCE_COLUMNS)
    rows = rows.withColumn("dataset", F.lit(run.dataset))
    if run.appends:
        tables.write_table_partitioned(rows, run.lake, INSTANCES)
    else:
        load.write_dataset_partition(run.spark, rows, run.lake, INSTANCES, run.dataset)
