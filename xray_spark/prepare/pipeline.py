"""The prepare job: an archive into a Petastorm training store, step by step.

:func:`run_prepare` is the table of contents; each step is a function below it, in the
order it runs, and the work of each lives in its own module:

1-4. read the source (:mod:`~xray_spark.prepare.sources`): the NIH CSV and its PNG files,
   or a DICOM export by its headers; check each description, choose the label set, give
   each patient a split, match descriptions to files, list what is missing or duplicated;
5. decode on the executors (:mod:`~xray_spark.prepare.decode`);
6. quarantine what was bad (:mod:`~xray_spark.prepare.quarantine`), stopping when it is
   more than ``quarantine.max_fraction``;
7. write the store and its manifest, then ``xray.studies`` and ``xray.boxes``
   (:mod:`~xray_spark.prepare.load`).

Nothing is dropped silently: every metadata row ends up in the store, in
``xray.quarantine`` with a reason, or in the run's list of rows without an image file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from xray_spark import locks, privacy, progress
from xray_spark.config import Settings
from xray_spark.errors import QuarantineLimitExceeded, UsageError
from xray_spark.lake import Lake, local_path
from xray_spark.lake import store as store_mod
from xray_spark.prepare import load, tally
from xray_spark.prepare import metadata as meta
from xray_spark.prepare.decode import decode_images
from xray_spark.prepare.quarantine import append_quarantine, quarantine_rows, quarantined_before
from xray_spark.prepare.run import CheckedMetadata, Decoded, MatchedFiles, PrepareInputs, PrepareRun
from xray_spark.prepare.sources import read_source, source_named
from xray_spark.prepare.summary import finding_frequency_chart
from xray_spark.splits import UNLABELED


def check_inputs(inputs: PrepareInputs, settings: Settings | None = None) -> None:
    """Fail fast, before Spark starts, on local inputs that are missing or of the wrong kind.

    With ``settings``, a DICOM source's pseudonym key is checked too, by the check the run
    makes again (:func:`xray_spark.privacy.key_for_lake`): a key file inside the lake fails here.
    """
    source = source_named(inputs.source)
    if not source.self_describing and not inputs.metadata:
        raise UsageError(f"--metadata CSV is required for --source {source.name} (the NIH Data_Entry file)")
    if source.self_describing and (inputs.images is None or inputs.metadata_only):
        raise UsageError(f"--source {source.name} reads the headers of the files under --images DIR: pass it")
    local = local_path(inputs.metadata) if inputs.metadata else None
    if local is not None:
        if not os.path.exists(local):
            raise UsageError(f"metadata file {local} does not exist: pass --metadata PATH/TO/Data_Entry_2017.csv")
        meta.check_header(meta.read_header_cells(local), local)
    if inputs.images is not None and not inputs.metadata_only:
        folder = local_path(inputs.images)
        if folder is not None and not os.path.isdir(folder):
            raise UsageError(f"images folder {folder} does not exist or is not a folder: pass --images DIR")
    if inputs.labels and not source.self_describing:
        raise UsageError(
            f"--labels labels a DICOM source's films: for --source {source.name} the labels are in --metadata"
        )
    for path in [inputs.bbox, inputs.labels, *(inputs.split_lists or ())]:
        local = local_path(path) if path else None
        if local is not None and not os.path.isfile(local):
            raise UsageError(f"file {local} does not exist (given to --bbox, --labels or --split-lists)")
    if source.identified and settings is not None:
        privacy.key_for_lake(settings.privacy, Lake.at(settings.lake))


def run_prepare(spark: SparkSession, lake: Lake, settings: Settings, inputs: PrepareInputs) -> dict[str, Any]:
    """Ingest an archive into ``lake/petastorm/<dataset>``; returns the run summary.

    Raises :class:`UsageError` for bad arguments and :class:`QuarantineLimitExceeded`
    (after recording the quarantine rows and reports) when too much input is bad.

    Whatever the run cached is released however it ends: Spark matches cached plans by
    the store's path, not its files, so a later run in the same session would otherwise
    be served the failed run's view of the store.
    """
    run = PrepareRun(spark, lake, settings, inputs)
    with _lock(run), progress.step("preparing"):
        try:
            start(run)
            record = read_source(run)
            if record.matched is None:  # --metadata-only
                return finish(run)
            decoded = decode(run, record.matched, record.label_set)
            good = quarantine(run, record.metadata, record.matched, decoded)
            write_store(run, good, decoded.n_good, record.label_set)
            if record.after_store is not None:
                record.after_store(run, good, record.matched.with_file)
            write_tables(run)
            if inputs.bbox:
                write_boxes(run)
            return finish(run)
        finally:
            run.release()


def _lock(run: PrepareRun) -> contextlib.AbstractContextManager:
    """One writer per store: ``lake/locks/prepare-<dataset>.lock`` (none for a metadata-only check)."""
    if run.inputs.metadata_only or run.inputs.images is None:
        return contextlib.nullcontext()
    wait = run.settings.locks.wait_seconds
    return locks.lake_lock(run.lake, f"prepare-{run.dataset}", job="prepare", wait_seconds=wait)


# =========================================================================================
# the steps, in order
# =========================================================================================
def start(run: PrepareRun) -> None:
    """The summary's head, and the store's manifest (None for a new store)."""
    run.summary.update(
        run_id=run.run_id,
        run_time=run.run_time.isoformat(),
        dataset=run.dataset,
        store=run.store_url,
        report_dir=run.report_dir,
        incremental=run.inputs.incremental,
        phase_seconds={},
        source=run.inputs.source,
    )
    if not (run.inputs.metadata_only or run.inputs.images is None):  # it holds the store's lock
        run.summary["recovered_replace"] = load.recover_replace(run.lake, run.dataset)
        load.refuse_unmanifested(run.lake, run.dataset)
    run.manifest = store_mod.read_manifest(run.lake, run.dataset)
    if not (run.inputs.metadata_only or run.inputs.images is None):
        load.check_volumes(run.lake, run.dataset, append=run.appends)  # before any work, not after it


def decode(run: PrepareRun, matched: MatchedFiles, label_set: list[str]) -> Decoded:
    """Every candidate decoded on the executors, in partitions of about 250 images."""
    ingest_date = run.run_time.date().isoformat()
    n_partitions = max(run.spark.sparkContext.defaultParallelism, math.ceil(matched.n_candidates / 250))
    progress.expect(matched.n_candidates)
    decoded = decode_images(matched.with_file, run.settings, label_set, ingest_date, n_partitions)
    decoded = run.keep(decoded, on_disk=True)  # the films' bytes: in memory they would grow the heap with the archive
    good = decoded.where(F.col("reason").isNull())
    counts = tally.decoded_tally(decoded)  # the job that decodes (the rows stay cached)
    result = Decoded(good, decoded.where(F.col("reason").isNotNull()), counts["good"], counts)
    run.phase("decode")
    return result


def quarantine(run: PrepareRun, metadata: CheckedMetadata, matched: MatchedFiles, decoded: Decoded) -> DataFrame:
    """Record the bad rows and images; stop when they are over ``quarantine.max_fraction``. Returns the good."""
    good, bad_images = decoded.good, decoded.bad
    rows = run.keep(
        quarantine_rows(metadata.bad, run.dataset, run.run_id, run.run_time).unionByName(
            quarantine_rows(bad_images, run.dataset, run.run_id, run.run_time)
        )
    )
    by_reason = metadata.bad_by_reason
    if by_reason is None:
        by_reason = {r["reason"]: int(r["count"]) for r in metadata.bad.groupBy("reason").count().collect()}
    by_reason = dict(by_reason)
    for reason, count in decoded.counts["bad_by_reason"].items():
        by_reason[reason] = by_reason.get(reason, 0) + count
    n_quarantined = sum(by_reason.values())
    earlier_runs = [r["run_id"] for r in run.manifest.runs] if run.manifest and n_quarantined else []
    known = quarantined_before(rows, run.lake, run.dataset, earlier_runs)
    considered = metadata.rows_read + matched.n_orphans - known
    fraction = (n_quarantined - known) / considered if considered else 0.0
    limit = run.settings.quarantine.max_fraction
    counts = decoded.counts
    run.summary["images"] |= {
        "converted": counts["converted"],
        "written": 0,
        "display_pictures": counts["display_pictures"],  # written with the store, none if it is not
    }
    run.summary["quarantine"] = {
        "total": n_quarantined,
        "fraction": round(fraction, 6),
        "by_reason": by_reason,
        "already_quarantined": known,
        "max_fraction": limit,
    }
    if n_quarantined:
        append_quarantine(rows, run.lake)
        load.write_list(rows.select("image_id", "source_path", "reason", "detail"), f"{run.report_dir}/quarantine")
    if fraction > limit:
        run.summary["seconds"] = round(time.monotonic() - run.started, 1)
        run.lake.write_json(f"{run.report_dir}/summary.json", run.summary)
        raise QuarantineLimitExceeded(
            f"{n_quarantined - known} of {considered} new inputs ({fraction:.1%}) were quarantined, over "
            f"quarantine.max_fraction={limit:g}; nothing was added to the store. "
            f"Reasons: {by_reason}. See xray.quarantine (run_id {run.run_id}) and {run.report_dir}",
            run.summary,
        )
    run.phase("quarantine")
    return good


def write_store(run: PrepareRun, good: DataFrame, n_good: int, label_set: list[str]) -> None:
    """The good rows into the store (appended, or the store replaced), then the manifest with this run."""
    settings, inputs = run.settings, run.inputs
    if run.guards_removal:
        load.refuse_removal(
            run.spark, run.store_url, good.select("image_id"), run.dataset, f"{n_good:,} images decoded"
        )
    if n_good or not run.appends:
        load.write_store(
            run.spark,
            good,
            run.lake,
            run.dataset,
            run.run_id,
            append=run.appends,
            n_files=math.ceil(n_good / settings.prepare.images_per_file),
            rowgroup_size_mb=settings.prepare.rowgroup_size_mb,
        )
    # Every run stays in the history, a replacing one too.
    runs = list(run.manifest.runs) if run.manifest is not None else []
    runs.append(
        {
            "run_id": run.run_id,
            "run_time": run.run_time.isoformat(),
            "mode": run.summary["mode"] if not inputs.replace or run.appends else "replace",
            "images_added": n_good,
            "metadata": inputs.metadata,
            "images": run.images_ref or inputs.images,  # a DICOM delivery's folder by its reference
        }
    )
    manifest = store_mod.StoreManifest(
        dataset=run.dataset,
        labels=label_set,
        image_size=settings.image.size,
        split=dataclasses.asdict(settings.split) | {"lists": list(inputs.split_lists or [])},
        runs=runs,
        key_fingerprint=run.key_fingerprint or (run.manifest.key_fingerprint if run.manifest else None),
    )
    store_mod.write_manifest(run.lake, manifest)
    if not run.appends:
        load.finish_replace(run.lake, run.dataset)
    run.summary["images"]["written"] = n_good
    run.phase("write_store")
    if settings.web.display_max_side and (n_good or not run.appends):
        shown = load.write_display_pictures(run.spark, good, run.lake, run.dataset, run.run_id, append=run.appends)
        run.summary["images"]["display_pictures"] = shown
        run.phase("display_pictures")


def write_tables(run: PrepareRun) -> None:
    """``xray.studies`` from the store, and the store's sizes per split and finding."""
    run.summary |= tally.store_tally(run.spark.read.parquet(run.store_url), UNLABELED)
    empty = run.summary["store_rows"] == 0
    run.summary["studies_rows"] = load.write_studies(
        run.spark, run.lake, run.dataset, run.store_url, run.inputs.source, empty=empty
    )
    run.phase("tables")


def write_boxes(run: PrepareRun) -> None:
    """The bounding boxes into ``xray.boxes``, with how many belong to stored images."""
    boxes = run.keep(meta.read_bbox(run.spark, run.inputs.bbox, run.dataset))
    load.write_boxes(run.spark, boxes, run.lake, run.dataset)
    stored = run.spark.read.parquet(run.store_url).select("image_id")
    run.summary["boxes"] = tally.row_counts(
        rows=boxes,
        images=boxes.select("image_id").distinct(),
        for_stored_images=boxes.join(stored, "image_id", "left_semi"),
    )
    run.phase("boxes")


def finish(run: PrepareRun) -> dict[str, Any]:
    """Write the bar chart and the summary JSON into the run's report folder."""
    summary = run.summary
    summary["chart"] = f"{summary['report_dir']}/finding_counts.png"
    run.lake.write_bytes(summary["chart"], finding_frequency_chart(summary))
    summary["seconds"] = round(time.monotonic() - run.started, 1)
    run.lake.write_json(f"{summary['report_dir']}/summary.json", summary)
    return summary
