"""One prepare run's context and the values its steps hand each other."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Callable
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession

from xray_spark.config import Settings
from xray_spark.lake import Lake, new_run_id
from xray_spark.lake import store as store_mod


@dataclasses.dataclass(frozen=True)
class PrepareInputs:
    metadata: str | None  # the NIH Data_Entry CSV (None for a DICOM source)
    images: str | None
    bbox: str | None = None
    split_lists: tuple[str, str] | None = None
    incremental: bool = False
    require_images: bool = False
    metadata_only: bool = False
    #: A full run may remove studies from a non-empty store only when this is set.
    replace: bool = False
    #: ``nih`` (a Data_Entry CSV and its images) or ``dicom`` (a folder of DICOM files).
    source: str = "nih"
    #: For a DICOM source: a CSV of Finding Labels by Accession Number or SOP Instance UID.
    labels: str | None = None
    #: For a DICOM source: the files to read (absolute paths), instead of every file under ``images``.
    files: tuple[str, ...] | None = None


@dataclasses.dataclass
class PrepareRun:
    """One run's context: what it was given, where it writes, what it has cached and timed."""

    spark: SparkSession
    lake: Lake
    settings: Settings
    inputs: PrepareInputs
    run_id: str = dataclasses.field(default_factory=new_run_id)
    run_time: dt.datetime = dataclasses.field(default_factory=lambda: dt.datetime.now(dt.UTC).replace(microsecond=0))
    started: float = dataclasses.field(default_factory=time.monotonic)
    summary: dict[str, Any] = dataclasses.field(default_factory=dict)
    manifest: store_mod.StoreManifest | None = None
    key_fingerprint: str | None = None  # a DICOM run's pseudonym key (privacy.key_fingerprint)
    images_ref: str | None = None  # a DICOM run's images folder, as the lake may name it (privacy.source_ref)
    _cached: list[DataFrame] = dataclasses.field(default_factory=list)
    _mark: float = dataclasses.field(default_factory=time.monotonic)

    @property
    def dataset(self) -> str:
        return self.settings.dataset

    @property
    def store_url(self) -> str:
        return self.lake.store_url(self.dataset)

    @property
    def report_dir(self) -> str:
        return self.lake.report_dir("prepare", self.run_id)

    @property
    def appends(self) -> bool:
        """An incremental run over an existing store adds to it."""
        return self.inputs.incremental and self.manifest is not None

    @property
    def guards_removal(self) -> bool:
        """A full run over an existing store must not remove studies unless ``--replace``."""
        return not self.inputs.incremental and self.manifest is not None and not self.inputs.replace

    def keep(self, df: DataFrame, on_disk: bool = False) -> DataFrame:
        """Cache ``df`` for the rest of the run (released by :meth:`release`); ``on_disk`` for rows as large as the
        store itself, which in memory would fill the driver's heap (the executor, in local mode) with the archive."""
        self._cached.append(df.persist(StorageLevel.DISK_ONLY) if on_disk else df.persist())
        return df

    def release(self) -> None:
        for df in self._cached:
            df.unpersist()
        self._cached.clear()

    def phase(self, name: str) -> None:
        """Seconds since the previous phase ended, under ``summary['phase_seconds'][name]``."""
        now = time.monotonic()
        self.summary["phase_seconds"][name] = round(now - self._mark, 2)
        self._mark = now


@dataclasses.dataclass(frozen=True)
class ReadInputs:
    raw: DataFrame  # the metadata rows to consider (not yet in the store, when appending)
    files: DataFrame | None  # the image listing
    already: int  # metadata rows whose image is in the store already


@dataclasses.dataclass(frozen=True)
class CheckedMetadata:
    checked: DataFrame  # every row considered, with its verdict
    valid: DataFrame
    bad: DataFrame
    rows_read: int
    #: The bad rows per quarantine reason, where the metadata's aggregate counted them already.
    bad_by_reason: dict[str, int] | None = None


@dataclasses.dataclass(frozen=True)
class MatchedFiles:
    with_file: DataFrame
    n_candidates: int
    n_orphans: int
    files_found: int


@dataclasses.dataclass(frozen=True)
class Decoded:
    good: DataFrame
    bad: DataFrame
    n_good: int
    counts: dict[str, Any]  # see tally.decoded_tally


@dataclasses.dataclass(frozen=True)
class SourceRecord:
    """What an image source (:mod:`xray_spark.prepare.sources`) hands the rest of prepare, whatever the source.

    ``metadata`` holds every input considered with its verdict (the bad ones go to quarantine);
    ``matched`` the candidates to decode, in the columns decode takes (None: a metadata-only
    check); ``label_set`` the store's findings; ``after_store`` what the source writes once the
    store holds the good rows (called with the run, the good rows and the candidates).
    """

    metadata: CheckedMetadata
    matched: MatchedFiles | None
    label_set: list[str]
    after_store: Callable[[PrepareRun, DataFrame, DataFrame], None] | None = None


@dataclasses.dataclass(frozen=True)
class MetadataCounts:
    """The summary's ``metadata`` section: what the source's descriptions of the films held."""

    file: str | None  # the CSV, or a DICOM delivery's reference (its path may name a patient)
    rows: int  # descriptions read, those already in the store included
    rows_considered: int
    already_in_store: int
    valid_rows: int
    patients: int
    views: dict[str, int]
    finding_counts: dict[str, int]
    implausible_ages_set_null: int = 0


@dataclasses.dataclass(frozen=True)
class ImageCounts:
    """The summary's ``images`` section: the files found and how they matched the descriptions."""

    folder: str | None
    files_found: int
    with_metadata: int
    files_without_metadata: int
    duplicate_files_ignored: int
    metadata_rows_without_file: int = 0


def write_sections(
    run: PrepareRun, *, metadata: MetadataCounts | None = None, images: ImageCounts | None = None
) -> None:
    """The summary's ``metadata`` and ``images`` sections, the same keys for every source."""
    if metadata is not None:
        run.summary["metadata"] = dataclasses.asdict(metadata)
    if images is not None:
        run.summary["images"] = dataclasses.asdict(images)
