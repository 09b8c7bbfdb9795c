"""The NIH source: a Data_Entry CSV and a folder of PNG files, read, checked, split and matched.

1. read the inputs: the metadata CSV (:mod:`~xray_spark.prepare.metadata`) and the image
   listing (:mod:`~xray_spark.prepare.files`); in an incremental run, the rows already
   stored are set aside;
2. check the metadata row by row and choose the label set;
3. give each patient a split (:mod:`~xray_spark.prepare.split`);
4. match rows to files, and list what is missing, orphaned or duplicated.
"""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from xray_spark.config import Settings
from xray_spark.errors import UsageError
from xray_spark.prepare import load, tally
from xray_spark.prepare import metadata as meta
from xray_spark.prepare import split as splits
from xray_spark.prepare.files import attach_files, list_image_files
from xray_spark.prepare.label_set import choose_labels
from xray_spark.prepare.run import (
    CheckedMetadata,
    ImageCounts,
    MatchedFiles,
    MetadataCounts,
    PrepareInputs,
    PrepareRun,
    ReadInputs,
    SourceRecord,
    write_sections,
)

#: The metadata file a night's NIH delivery holds beside its images/ folder.
METADATA_NAME = "Data_Entry_2017.csv"


def tonight(folder: Path, settings: Settings) -> PrepareInputs:
    """A night's delivery: ``Data_Entry_2017.csv`` and ``images/`` in ``folder``, or one clear error (a late one)."""
    if not (folder / METADATA_NAME).is_file():
        raise UsageError(
            f"{folder / METADATA_NAME} has not arrived: nothing was ingested or scored "
            "(run again when it has, or pass --incoming DIR)"
        )
    if not (folder / "images").is_dir():
        raise UsageError(f"{folder / 'images'} is not a folder: nothing was ingested or scored")
    return PrepareInputs(
        metadata=str(folder / METADATA_NAME), images=str(folder / "images"), incremental=True, source="nih"
    )


def read(run: PrepareRun) -> SourceRecord:
    """The CSV read and checked, the label set, splits, rows matched to files."""
    given = read_inputs(run)
    metadata = check_metadata(run, given)
    label_set = choose_labels(run)
    if run.inputs.metadata_only or run.inputs.images is None:
        run.summary["mode"] = "metadata-only"
        return SourceRecord(metadata, None, label_set)
    run.summary["mode"] = "incremental" if run.inputs.incremental else "full"
    run.phase("metadata")
    with_split = assign_splits(run, metadata.valid)
    return SourceRecord(metadata, match_files(run, metadata, with_split, given.files), label_set)


def read_inputs(run: PrepareRun) -> ReadInputs:
    """The metadata rows to consider and the image listing."""
    raw = meta.read_metadata(run.spark, run.inputs.metadata)
    files = None
    if run.inputs.images is not None and not run.inputs.metadata_only:
        files = list_image_files(run.spark, run.inputs.images)  # fail fast on a bad folder
    already = 0
    if run.appends:
        existing = load.store_image_ids(run.spark, run.store_url)
        raw_ids = raw.withColumn("image_id", F.trim("image_index"))
        already = raw_ids.join(existing, "image_id", "left_semi").count()
        raw = raw_ids.join(existing, "image_id", "left_anti").drop("image_id")
    return ReadInputs(raw, files, already)


def check_metadata(run: PrepareRun, given: ReadInputs) -> CheckedMetadata:
    """Each row's verdict, and the counts of the valid ones (one aggregate)."""
    checked = run.keep(meta.validate_metadata(given.raw))
    counts = tally.metadata_tally(checked)
    valid = checked.where(F.col("reason").isNull())
    already = given.already
    kept = ("valid_rows", "patients", "implausible_ages_set_null", "views", "finding_counts")
    counted = MetadataCounts(
        run.inputs.metadata, counts["rows"] + already, counts["rows"], already, **{k: counts[k] for k in kept}
    )
    write_sections(run, metadata=counted)
    bad = checked.where(F.col("reason").isNotNull())
    return CheckedMetadata(checked, valid, bad, counts["rows"], counts["bad_by_reason"])


def assign_splits(run: PrepareRun, valid: DataFrame) -> DataFrame:
    """Each valid row's split: from the official lists when given, else by patient hash."""
    if run.inputs.split_lists is not None:
        lists = splits.read_split_lists(run.spark, *run.inputs.split_lists)
        return splits.assign_splits_from_lists(valid, lists, run.settings.split)
    return splits.assign_splits(valid, run.settings.split)


def match_files(run: PrepareRun, metadata: CheckedMetadata, with_split: DataFrame, files: DataFrame) -> MatchedFiles:
    """Rows with a file go on; rows without one, orphan files and duplicates are listed in the report."""
    with_file, without_file, unique_files, duplicate_files = attach_files(with_split, files)
    with_file = run.keep(with_file)
    all_ids = metadata.checked.select("image_id")
    if run.appends:
        all_ids = all_ids.unionByName(load.store_image_ids(run.spark, run.store_url))
    orphans = unique_files.join(all_ids, unique_files["file_name"] == all_ids["image_id"], "left_anti")
    n = tally.row_counts(
        with_file=with_file, missing=without_file, orphans=orphans, duplicates=duplicate_files, files=unique_files
    )
    n_candidates = n["with_file"]
    if run.guards_removal:  # fail before the decode when the files alone cannot keep the store
        what = f"{n_candidates:,} images have metadata and a file"
        load.refuse_removal(run.spark, run.store_url, with_file.select("image_id"), run.dataset, what)
    counts = {
        "missing_images": (n["missing"], without_file.select("image_id", "patient_id", "finding_labels")),
        "orphan_images": (n["orphans"], orphans.select("file_name", "source_path")),
        "duplicate_files": (n["duplicates"], duplicate_files.select("file_name", "source_path")),
    }
    for name, (count, rows) in counts.items():
        if count:  # no listing job when there is nothing to list
            load.write_list(rows, f"{run.report_dir}/{name}")
    n_missing = counts["missing_images"][0]
    if n_missing and run.inputs.require_images:
        raise UsageError(
            f"{n_missing} metadata rows have no image file under {run.inputs.images} (--require-images is set): "
            f"see {run.report_dir}/missing_images, or drop --require-images to ingest what is there"
        )
    orphans, duplicates = counts["orphan_images"][0], counts["duplicate_files"][0]
    images = ImageCounts(run.inputs.images, n["files"], n_candidates, orphans, duplicates, n_missing)
    write_sections(run, images=images)
    run.phase("files")
    return MatchedFiles(with_file, n_candidates, orphans, n["files"])
