"""The prepare pipeline: an NIH-format archive into a Petastorm training store.

Extract, transform and load are separate DataFrame -> DataFrame functions, each testable
on its own; :func:`run_prepare` strings them together and returns the run's summary.

* extract: :func:`read_metadata` (the CSV), :func:`list_image_files` (the images folder)
* transform: :func:`validate_metadata` (quarantine reasons for bad rows),
  :func:`attach_files` (metadata x files), :func:`decode_images` (on the executors)
* load: :func:`write_store`, :func:`write_studies`, :func:`append_quarantine`

Nothing is dropped silently: every metadata row ends up in the store, in
``xray.quarantine`` with a reason, or in the run's list of rows without an image file.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime as dt
import gzip
import io
import logging
import math
import os
import stat
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from xray_spark import images as img
from xray_spark import locks, report, tables
from xray_spark import split as splits
from xray_spark import store as store_mod
from xray_spark.config import Settings
from xray_spark.errors import QuarantineLimitExceeded, UsageError
from xray_spark.labels import ALIASES, FINDINGS, NO_FINDING, choose_label_set, multi_hot, sample_weight
from xray_spark.lake import Lake
from xray_spark.schema import BOXES_SCHEMA, QUARANTINE_SCHEMA, STUDY_FIELDS, XraySchema, encode_labels

log = logging.getLogger(__name__)

# -- quarantine reasons ------------------------------------------------------------------
MISSING_IMAGE_ID = "missing_image_id"
UNSAFE_IMAGE_NAME = "unsafe_image_name"
DUPLICATE_IMAGE_ID = "duplicate_image_id"
UNKNOWN_FINDING = "unknown_finding"
BAD_AGE = "bad_age"
BAD_PATIENT_ID = "bad_patient_id"
BAD_FOLLOW_UP = "bad_follow_up"
UNREADABLE_FILE = "unreadable_file"
NOT_A_FILE = "not_a_regular_file"
FILE_TOO_LARGE = "file_too_large"
CONTRADICTORY_LABELS = "contradictory_labels"
LINE_BREAK_IN_FIELD = "line_break_in_field"

#: Every reason a row can be quarantined for, with what it means.
REASONS: dict[str, str] = {
    MISSING_IMAGE_ID: "the metadata row has an empty Image Index",
    UNSAFE_IMAGE_NAME: "the image name holds a path separator or '..' and would leave the images folder",
    DUPLICATE_IMAGE_ID: "the image id appears on an earlier metadata row (the first one is kept)",
    UNKNOWN_FINDING: "Finding Labels holds a token that is not one of the 14 findings",
    CONTRADICTORY_LABELS: "Finding Labels says No Finding and names a finding too (e.g. No Finding|Effusion)",
    LINE_BREAK_IN_FIELD: "a quoted field of the metadata row holds a line break",
    BAD_AGE: "Patient Age is not a number of years (e.g. 58 or 058Y)",
    BAD_PATIENT_ID: "Patient ID is not an integer",
    BAD_FOLLOW_UP: "Follow-up # is not an integer",
    UNREADABLE_FILE: "the image file could not be read",
    NOT_A_FILE: "the path is a FIFO, a device, a socket or a link to one: only regular files are read",
    FILE_TOO_LARGE: "the file is larger than image.max_file_bytes and was not read",
    img.EMPTY: "the image file is empty",
    img.TRUNCATED: "the image file is cut short",
    img.UNDECODABLE: "the file is not an image that can be decoded",
    img.TOO_LARGE: "the header claims more than image.max_pixels pixels or image.max_decoded_bytes decoded",
    img.TOO_SMALL: "the image's shorter side is below image.min_side",
    img.BLANK: "every pixel of the image has the same value",
}

#: The metadata columns by position, as named inside the pipeline.
METADATA_COLUMNS: tuple[str, ...] = (
    "image_index",
    "finding_labels_raw",
    "follow_up_raw",
    "patient_id_raw",
    "age_raw",
    "sex_raw",
    "view_raw",
    "width_raw",
    "height_raw",
    "spacing_x_raw",
    "spacing_y_raw",
)
#: The header cells of the NIH file, normalised (lower case, no spaces), by position.
EXPECTED_HEADER: tuple[str, ...] = (
    "imageindex",
    "findinglabels",
    "follow-up#",
    "patientid",
    "patientage",
    "patientgender",
    "viewposition",
    "originalimage[width",
    "height]",
    "originalimagepixelspacing[x",
    "y]",
)
MAX_PLAUSIBLE_AGE = 120


@dataclasses.dataclass(frozen=True)
class PrepareInputs:
    metadata: str
    images: str | None
    bbox: str | None = None
    split_lists: tuple[str, str] | None = None
    incremental: bool = False
    require_images: bool = False
    metadata_only: bool = False
    #: A full run may remove studies from a non-empty store only when this is set.
    replace: bool = False


# =========================================================================================
# extract
# =========================================================================================
def check_inputs(inputs: PrepareInputs) -> None:
    """Fail fast, before Spark starts, on local inputs that are missing or of the wrong kind."""
    local = _local_path(inputs.metadata)
    if local is not None:
        if not os.path.exists(local):
            raise UsageError(f"metadata file {local} does not exist: pass --metadata PATH/TO/Data_Entry_2017.csv")
        check_header(read_header_cells(local), local)
    if inputs.images is not None and not inputs.metadata_only:
        folder = _local_path(inputs.images)
        if folder is not None and not os.path.isdir(folder):
            raise UsageError(f"images folder {folder} does not exist or is not a folder: pass --images DIR")
    for path in [inputs.bbox, *(inputs.split_lists or ())]:
        local = _local_path(path) if path else None
        if local is not None and not os.path.isfile(local):
            raise UsageError(f"file {local} does not exist (given to --bbox or --split-lists)")


def _local_path(path: str) -> str | None:
    if path.startswith("file://"):
        return path[len("file://") :]
    if "://" in path:
        return None
    return path


def read_header_cells(path: str) -> list[str]:
    """The first line of a (possibly gzipped) local CSV, split into cells."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            first = fh.readline()
    except (OSError, EOFError) as exc:
        raise UsageError(f"metadata file {path} cannot be read: {exc}") from None
    if not first.strip():
        raise UsageError(f"metadata file {path} is empty: it needs the NIH header and one row per image")
    text = first.decode("utf-8", errors="replace").lstrip("\ufeff").rstrip("\r\n")
    return next(iter(csv.reader(io.StringIO(text))), [])


def check_header(cells: Sequence[str], path: str) -> None:
    """The NIH header, in order; trailing empty cells (the 2017 file has one) are allowed."""
    normalised = [c.strip().lower().replace(" ", "") for c in cells]
    while normalised and normalised[-1] == "":
        normalised.pop()
    if len(normalised) < len(EXPECTED_HEADER):
        missing = [h for h in EXPECTED_HEADER if h not in normalised]
        raise UsageError(
            f"metadata file {path} has {len(normalised)} columns, the NIH format has {len(EXPECTED_HEADER)}: "
            f"missing {', '.join(missing) or 'columns'} (expected header: {', '.join(EXPECTED_HEADER)})"
        )
    for i, (got, want) in enumerate(zip(normalised, EXPECTED_HEADER, strict=False)):
        if got != want:
            raise UsageError(
                f"metadata file {path}: column {i + 1} is {cells[i]!r}, expected {want!r} "
                "(the NIH Data_Entry header: Image Index, Finding Labels, Follow-up #, Patient ID, ...)"
            )


def read_metadata(spark: SparkSession, path: str) -> DataFrame:
    """The metadata CSV as strings in :data:`METADATA_COLUMNS`, plus ``row_number`` (file order)."""
    local = _local_path(path)
    if local is not None:
        if not os.path.exists(local):
            raise UsageError(f"metadata file {local} does not exist: pass --metadata PATH/TO/Data_Entry_2017.csv")
        if os.path.isdir(local):
            raise UsageError(f"metadata path {local} is a folder: pass the CSV file itself to --metadata")
        cells = read_header_cells(local)
    else:
        try:
            cells = next(iter(spark.read.option("header", "false").csv(path).limit(1).collect()), None)
        except Exception as exc:
            raise UsageError(f"metadata file {path} cannot be read: {splits._first_line(exc)}") from None
        cells = [c or "" for c in cells] if cells is not None else []
    if not cells:
        raise UsageError(f"metadata file {path} is empty: it needs the NIH header and one row per image")
    check_header(cells, path)
    names = list(METADATA_COLUMNS) + [f"extra_{i}" for i in range(len(cells) - len(METADATA_COLUMNS))]
    # All columns as strings (no inference); renamed by position, so the bracketed NIH
    # header cells never have to be quoted.
    # multiLine: a quoted field may hold a line break and the row stays one row (validation
    # then quarantines it); without it Spark would split the row in two.
    df = (
        spark.read.option("header", "true")
        .option("mode", "PERMISSIVE")
        .option("encoding", "UTF-8")
        .option("multiLine", "true")
        .csv(path)
    )
    df = df.toDF(*names[: len(df.columns)])
    return df.select(*METADATA_COLUMNS).withColumn("row_number", F.monotonically_increasing_id())


def _walk_local(root: str) -> Iterator[tuple[str, str]]:
    """(file name, absolute path) of each image under ``root``; follows links, never loops."""
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames.sort()
        for name in sorted(filenames):
            if name.lower().endswith(img.IMAGE_SUFFIXES):
                yield name, os.path.join(os.path.abspath(dirpath), name)


def list_image_files(spark: SparkSession, images_dir: str) -> DataFrame:
    """Every image file under ``images_dir`` (recursively) as (file_name, source_path).

    A local folder is walked on the driver (fast, and safe against symlink loops); a URL
    is listed through Hadoop's file system, as Spark would.
    """
    local = _local_path(images_dir)
    schema = T.StructType([T.StructField("file_name", T.StringType()), T.StructField("source_path", T.StringType())])
    if local is not None:
        if not os.path.isdir(local):
            raise UsageError(f"images folder {local} does not exist or is not a folder: pass --images DIR")
        if not os.access(local, os.R_OK | os.X_OK):
            raise UsageError(f"images folder {local} cannot be read: check its permissions")
        rows = list(_walk_local(local))
        return spark.createDataFrame(pd.DataFrame(rows, columns=["file_name", "source_path"]), schema)
    try:
        listing = (
            spark.read.format("binaryFile")
            .option("recursiveFileLookup", "true")
            .load(images_dir)
            .select(F.col("path").alias("source_path"))
        )
    except Exception as exc:
        raise UsageError(f"images folder {images_dir} cannot be listed: {splits._first_line(exc)}") from None
    name = F.element_at(F.split(F.col("source_path"), "/"), -1)
    suffix_ok = F.lower(name).rlike(r"\.(png|jpe?g|dcm)$")
    return listing.where(suffix_ok).select(name.alias("file_name"), "source_path")


def read_bbox(spark: SparkSession, path: str, dataset: str) -> DataFrame:
    """The bounding-box CSV as :data:`~xray_spark.schema.BOXES_SCHEMA` (``Infiltrate`` -> ``Infiltration``)."""
    local = _local_path(path)
    if local is not None and not os.path.isfile(local):
        raise UsageError(f"bounding-box file {local} does not exist: pass --bbox PATH/TO/BBox_List_2017.csv")
    raw = spark.read.option("header", "true").csv(path)
    if len(raw.columns) < 6:
        raise UsageError(
            f"bounding-box file {path} has {len(raw.columns)} columns; expected Image Index, Finding Label, "
            "Bbox [x, y, w, h] (6 columns)"
        )
    raw = raw.toDF("image_id", "label", "x", "y", "w", "h", *[f"extra_{i}" for i in range(len(raw.columns) - 6)])
    label = F.trim(F.col("label"))
    for alias, name in ALIASES.items():
        label = F.when(label == alias, F.lit(name)).otherwise(label)
    return raw.select(
        F.trim("image_id").alias("image_id"),
        label.alias("finding"),
        *(F.col(c).cast("float").alias(c) for c in ("x", "y", "w", "h")),
        F.lit(dataset).alias("dataset"),
    ).where(F.col("finding").isin(list(FINDINGS)) & F.col("x").isNotNull())


# =========================================================================================
# transform
# =========================================================================================
def _findings_array(raw: F.Column) -> tuple[F.Column, F.Column]:
    """(canonical findings array, unknown tokens array) from the Finding Labels text."""
    tokens = F.transform(F.split(F.coalesce(raw, F.lit("")), r"\|"), lambda t: F.trim(t))

    def canonical_token(t: F.Column) -> F.Column:
        expr = t
        for alias, name in ALIASES.items():
            expr = F.when(t == alias, F.lit(name)).otherwise(expr)
        return expr

    canonical = F.transform(tokens, canonical_token)
    only_no_finding = (F.size(tokens) == 1) & (F.element_at(tokens, 1) == F.lit(NO_FINDING))
    # "No Finding" beside a finding is contradictory, not unknown (validate_metadata says so).
    vocabulary = F.array(*[F.lit(f) for f in (*FINDINGS, NO_FINDING)])
    unknown = F.when(only_no_finding, F.array().cast("array<string>")).otherwise(
        F.filter(canonical, lambda t: ~F.array_contains(vocabulary, t))
    )
    findings = F.when(only_no_finding, F.array().cast("array<string>")).otherwise(
        F.array_sort(F.array_distinct(canonical))
    )
    return findings, unknown


def validate_metadata(df: DataFrame) -> DataFrame:
    """Parse and check each metadata row; ``reason`` and ``detail`` say why a row is rejected.

    Rows with a null ``reason`` are valid. The first failing rule names the reason, in
    this order: missing id, unsafe name, duplicate id, a line break in a field, unknown
    finding, contradictory labels, bad patient id, bad follow-up, bad age.
    """
    image_id = F.trim(F.col("image_index"))
    findings, unknown = _findings_array(F.col("finding_labels_raw"))
    age_text = F.upper(F.trim(F.col("age_raw")))
    age_ok = age_text.rlike(r"^[0-9]{1,3}Y?$")
    age_value = F.regexp_extract(age_text, r"^([0-9]{1,3})", 1).cast("int")
    pid_text = F.trim(F.col("patient_id_raw"))
    fu_text = F.trim(F.col("follow_up_raw"))
    first = Window.partitionBy("image_id").orderBy("row_number")

    out = (
        df.withColumn("image_id", image_id)
        .withColumn("findings", findings)
        .withColumn("unknown_tokens", unknown)
        .withColumn("occurrence", F.row_number().over(first))
    )
    unsafe = (
        F.col("image_id").contains("/")
        | F.col("image_id").contains("\\")
        | F.col("image_id").startswith(".")
        | F.col("image_id").rlike(r"[\x00-\x1f]")
    )
    line_break = F.lit(False)
    for column in METADATA_COLUMNS:
        line_break = line_break | F.coalesce(F.col(column).rlike("[\r\n]"), F.lit(False))
    reason = (
        F.when(F.col("image_id").isNull() | (F.col("image_id") == ""), F.lit(MISSING_IMAGE_ID))
        .when(unsafe, F.lit(UNSAFE_IMAGE_NAME))
        .when(F.col("occurrence") > 1, F.lit(DUPLICATE_IMAGE_ID))
        .when(line_break, F.lit(LINE_BREAK_IN_FIELD))
        .when((F.size("unknown_tokens") > 0) | (F.col("finding_labels_raw").isNull()), F.lit(UNKNOWN_FINDING))
        .when(F.array_contains("findings", NO_FINDING), F.lit(CONTRADICTORY_LABELS))
        .when(~pid_text.rlike(r"^[0-9]{1,9}$") | pid_text.isNull(), F.lit(BAD_PATIENT_ID))
        .when(~fu_text.rlike(r"^[0-9]{1,6}$") | fu_text.isNull(), F.lit(BAD_FOLLOW_UP))
        .when(age_text.isNotNull() & (age_text != "") & ~age_ok, F.lit(BAD_AGE))
    )
    detail = (
        F.when(
            reason == UNKNOWN_FINDING,
            F.concat(
                F.lit("unknown token(s): "),
                F.concat_ws(", ", "unknown_tokens"),
                F.lit(" in "),
                F.coalesce(F.col("finding_labels_raw"), F.lit("<empty>")),
            ),
        )
        .when(reason == CONTRADICTORY_LABELS, F.concat(F.lit("Finding Labels is "), F.col("finding_labels_raw")))
        .when(reason == LINE_BREAK_IN_FIELD, F.lit("a quoted field holds a line break; the row was kept whole"))
        .when(reason == BAD_AGE, F.concat(F.lit("Patient Age is "), F.col("age_raw")))
        .when(
            reason == BAD_PATIENT_ID, F.concat(F.lit("Patient ID is "), F.coalesce("patient_id_raw", F.lit("<empty>")))
        )
        .when(
            reason == BAD_FOLLOW_UP, F.concat(F.lit("Follow-up # is "), F.coalesce("follow_up_raw", F.lit("<empty>")))
        )
        .when(reason == DUPLICATE_IMAGE_ID, F.concat(F.lit("row repeats image id "), F.col("image_id")))
        .when(reason == UNSAFE_IMAGE_NAME, F.concat(F.lit("image name "), F.col("image_id")))
        .when(reason == MISSING_IMAGE_ID, F.lit("empty Image Index"))
    )

    def num(col: str, kind: str) -> F.Column:
        text = F.trim(F.col(col))
        return F.when(text.rlike(r"^[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?$"), text.cast(kind))

    return out.select(
        "row_number",
        "image_id",
        F.when(F.size("findings") > 0, F.concat_ws("|", "findings"))
        .otherwise(F.lit(NO_FINDING))
        .alias("finding_labels"),
        "findings",
        pid_text.cast("int").alias("patient_id"),
        fu_text.cast("int").alias("follow_up"),
        F.when(age_ok & (age_value <= MAX_PLAUSIBLE_AGE), age_value).alias("age"),
        (age_ok & (age_value > MAX_PLAUSIBLE_AGE)).alias("implausible_age"),
        F.coalesce(F.upper(F.trim("sex_raw")), F.lit("")).alias("sex"),
        F.coalesce(F.upper(F.trim("view_raw")), F.lit("")).alias("view"),
        num("width_raw", "double").cast("int").alias("original_width"),
        num("height_raw", "double").cast("int").alias("original_height"),
        num("spacing_x_raw", "float").alias("pixel_spacing_x"),
        num("spacing_y_raw", "float").alias("pixel_spacing_y"),
        reason.alias("reason"),
        detail.alias("detail"),
    )


def finding_counts(df: DataFrame) -> dict[str, int]:
    """Images per finding (all 14, zero included) and ``No Finding``, from a ``findings`` column."""
    rows = (
        df.select(
            F.explode_outer(
                F.when(F.size("findings") > 0, F.col("findings")).otherwise(F.array(F.lit(NO_FINDING)))
            ).alias("finding")
        )
        .groupBy("finding")
        .count()
        .collect()
    )
    counts = {name: 0 for name in (*FINDINGS, NO_FINDING)}
    counts.update({r["finding"]: int(r["count"]) for r in rows if r["finding"] is not None})
    return counts


def attach_files(valid: DataFrame, files: DataFrame) -> tuple[DataFrame, DataFrame, DataFrame, DataFrame]:
    """Join metadata to files by name.

    Returns (rows with a file, rows without a file, files without a row, duplicate files):
    an image name found in several folders is taken from the first path in sorted order.
    """
    ranked = files.withColumn("copy", F.row_number().over(Window.partitionBy("file_name").orderBy("source_path")))
    unique_files = ranked.where(F.col("copy") == 1).drop("copy")
    duplicate_files = ranked.where(F.col("copy") > 1).drop("copy")
    with_file = valid.join(unique_files, valid["image_id"] == unique_files["file_name"], "inner").drop("file_name")
    without_file = valid.join(unique_files, valid["image_id"] == unique_files["file_name"], "left_anti")
    return with_file, without_file, unique_files, duplicate_files


_DECODED_EXTRA = [
    T.StructField("reason", T.StringType(), True),
    T.StructField("detail", T.StringType(), True),
    T.StructField("converted", T.StringType(), True),
]


def decoded_schema() -> T.StructType:
    """The store's columns, all nullable (a rejected image has no pixels), plus the verdict."""
    fields = [T.StructField(f.name, f.dataType, True) for f in XraySchema.as_spark_schema().fields]
    return T.StructType(fields + _DECODED_EXTRA)


def _read_bytes(path: str, max_bytes: int) -> bytes:
    """A regular file's bytes, at most ``max_bytes``; anything else is an :class:`ImageError`.

    A FIFO, a device (a ``.png`` linked to ``/dev/zero``) or a socket is refused before a
    byte is read: opening is non-blocking, so a FIFO with no writer cannot hang the task.
    """
    local = _local_path(path)
    if local is not None:
        fd = os.open(local, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as fh:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise img.ImageError(NOT_A_FILE, "the path is not a regular file (a FIFO, device or socket)")
            _check_file_size(info.st_size, max_bytes)
            data = fh.read(max_bytes + 1)
    else:
        import pyarrow.fs as pafs

        fs, inner = pafs.FileSystem.from_uri(path)
        info = fs.get_file_info(inner)
        if info.type != pafs.FileType.File:
            raise img.ImageError(NOT_A_FILE, f"the path is not a regular file ({info.type.name})")
        _check_file_size(info.size or 0, max_bytes)
        with fs.open_input_stream(inner) as stream:
            data = stream.read(max_bytes + 1)
    _check_file_size(len(data), max_bytes)  # it grew while being read
    return data


def _check_file_size(size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise img.ImageError(FILE_TOO_LARGE, f"the file has {size:,} bytes, over image.max_file_bytes={max_bytes:,}")


def make_decoder(
    label_set: Sequence[str],
    size: int,
    limits: img.ImageLimits,
    max_file_bytes: int,
    weight_base: float,
    weight_per_finding: float,
    ingest_date: str,
):
    """The function that ``mapInPandas`` runs on the executors (picklable, settings bound)."""
    labels = list(label_set)
    field_names = [f.name for f in decoded_schema().fields]

    def decode_partition(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        image_field = XraySchema.image
        for batch in batches:
            out: dict[str, list[Any]] = {name: [] for name in field_names}
            for row in batch.itertuples(index=False):
                reason = detail = converted = None
                encoded_image = None
                try:
                    data = _read_bytes(row.source_path, max_file_bytes)
                    pixels, facts = img.load_training_image(data, size, limits)
                    encoded_image = bytes(image_field.codec.encode(image_field, pixels))
                    converted = str(facts["converted"])
                except OSError as exc:
                    reason, detail = UNREADABLE_FILE, f"{type(exc).__name__}: {exc.strerror or 'cannot be read'}"
                except img.ImageError as exc:
                    reason, detail = exc.reason, exc.detail
                findings = list(row.findings) if row.findings is not None else []
                vector = multi_hot(findings, labels)
                out["image_id"].append(row.image_id)
                out["patient_id"].append(int(row.patient_id))
                out["follow_up"].append(int(row.follow_up))
                out["age"].append(None if pd.isna(row.age) else int(row.age))
                out["sex"].append(row.sex)
                out["view"].append(row.view)
                for col in ("original_width", "original_height"):
                    value = getattr(row, col)
                    out[col].append(None if pd.isna(value) else int(value))
                for col in ("pixel_spacing_x", "pixel_spacing_y"):
                    value = getattr(row, col)
                    out[col].append(None if pd.isna(value) else float(value))
                out["split"].append(row.split)
                out["image"].append(encoded_image)
                out["labels"].append(encode_labels(vector))
                out["finding_labels"].append(row.finding_labels)
                out["sample_weight"].append(sample_weight(int(vector.sum()), weight_base, weight_per_finding))
                out["ingest_date"].append(ingest_date)
                out["source_path"].append(row.source_path)
                out["reason"].append(reason)
                out["detail"].append(detail)
                out["converted"].append(converted)
            yield pd.DataFrame(out, columns=field_names)

    return decode_partition


def image_limits(settings: Settings) -> img.ImageLimits:
    """The decoder's bounds from ``image.*``."""
    image = settings.image
    return img.ImageLimits(
        max_pixels=image.max_pixels, max_decoded_bytes=image.max_decoded_bytes, min_side=image.min_side
    )


def decode_images(
    candidates: DataFrame, settings: Settings, label_set: Sequence[str], ingest_date: str, n_partitions: int
) -> DataFrame:
    """Read, check, convert and resize every candidate image on the executors.

    The result has the store's columns plus ``reason``/``detail`` (null for a good image)
    and ``converted`` (``rgba``, ``rgb``, ``16bit`` or empty).
    """
    # The metadata the store keeps, plus the findings the labels are made from; the
    # decoder computes the pixels, the label vector, the weight and the ingest date.
    computed = {
        XraySchema.image.name,
        XraySchema.labels.name,
        XraySchema.sample_weight.name,
        XraySchema.ingest_date.name,
    }
    columns = [f.name for f in XraySchema.fields.values() if f.name not in computed] + ["findings"]
    decoder = make_decoder(
        label_set,
        settings.image.size,
        image_limits(settings),
        settings.image.max_file_bytes,
        settings.labels.sample_weight.base,
        settings.labels.sample_weight.per_finding,
        ingest_date,
    )
    return candidates.select(*columns).repartition(n_partitions).mapInPandas(decoder, decoded_schema())


# =========================================================================================
# load
# =========================================================================================
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


def write_studies(spark: SparkSession, lake: Lake, dataset: str, store_url: str) -> int:
    """Rewrite this dataset's part of ``xray.studies`` from the store itself (so they always agree)."""
    store = spark.read.parquet(store_url)
    studies = store.select(
        *STUDY_FIELDS,
        F.when(F.col("finding_labels") == NO_FINDING, F.array().cast("array<string>"))
        .otherwise(F.split("finding_labels", r"\|"))
        .alias("findings"),
        F.lit(store_url).alias("store_path"),
        F.lit(dataset).alias("dataset"),
    )
    _write_dataset_partition(spark, studies, lake, "studies", dataset)
    return tables.read_table(spark, lake, "studies").where(F.col("dataset") == dataset).count()


def _write_dataset_partition(spark: SparkSession, df: DataFrame, lake: Lake, name: str, dataset: str) -> None:
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
    previous = spark.conf.get("spark.sql.sources.partitionOverwriteMode")
    spark.conf.set("spark.sql.sources.partitionOverwriteMode", "dynamic")
    try:
        df.write.mode("overwrite").partitionBy("dataset").parquet(lake.table_url(name))
    finally:
        spark.conf.set("spark.sql.sources.partitionOverwriteMode", previous)
    tables.register_table(spark, lake, name)


def append_quarantine(spark: SparkSession, rows: DataFrame, lake: Lake) -> None:
    tables.write_table(rows.select(*QUARANTINE_SCHEMA.fieldNames()), lake, "quarantine", mode="append")


def write_boxes(spark: SparkSession, boxes: DataFrame, lake: Lake, dataset: str) -> None:
    _write_dataset_partition(spark, boxes.select(*BOXES_SCHEMA.fieldNames()), lake, "boxes", dataset)


# =========================================================================================
# the whole run
# =========================================================================================
def _quarantine_rows(df: DataFrame, dataset: str, run_id: str, run_time: dt.datetime) -> DataFrame:
    source = F.col("source_path") if "source_path" in df.columns else F.lit(None).cast("string")
    return df.select(
        "image_id",
        source.alias("source_path"),
        "reason",
        "detail",
        F.lit(dataset).alias("dataset"),
        F.lit(run_id).alias("run_id"),
        F.lit(run_time).cast("timestamp").alias("run_time"),
    )


def _split_sizes(df: DataFrame) -> dict[str, dict[str, int]]:
    rows = df.groupBy("split").agg(F.countDistinct("patient_id").alias("patients"), F.count("*").alias("images"))
    return {r["split"]: {"patients": int(r["patients"]), "images": int(r["images"])} for r in rows.collect()}


def _write_list(df: DataFrame, folder: str) -> None:
    df.coalesce(1).write.mode("overwrite").option("header", "true").csv(folder)


def new_run_id() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def run_prepare(spark: SparkSession, settings: Settings, inputs: PrepareInputs, lake: Lake) -> dict[str, Any]:
    """Ingest an archive into ``lake/petastorm/<dataset>``; returns the run summary.

    Raises :class:`UsageError` for bad arguments and :class:`QuarantineLimitExceeded`
    (after recording the quarantine rows and reports) when too much input is bad.

    Whatever the run cached is released however it ends: Spark matches cached plans by
    the store's path, not its files, so a later run in the same session would otherwise
    be served the failed run's view of the store.
    """
    cached: list[DataFrame] = []
    lock = (
        contextlib.nullcontext()
        if inputs.metadata_only or inputs.images is None
        else locks.lake_lock(
            lake, f"prepare-{settings.dataset}", job="prepare", wait_seconds=settings.locks.wait_seconds
        )
    )
    with lock:
        try:
            return _prepare(spark, settings, inputs, lake, cached)
        finally:
            for df in cached:
                df.unpersist()


def refuse_removal(spark: SparkSession, store_url: str, kept_ids: DataFrame, dataset: str, what: str) -> None:
    """A full run must not remove studies from a non-empty store unless ``--replace`` says so."""
    existing = store_image_ids(spark, store_url)
    removed = existing.join(kept_ids, XraySchema.image_id.name, "left_anti").count()
    if removed:
        raise UsageError(
            f"this full prepare would remove {removed:,} of the {existing.count():,} studies in store {dataset!r} "
            f"({what}): pass --incremental to add to the store, or --replace to replace it"
        )


def _prepare(
    spark: SparkSession, settings: Settings, inputs: PrepareInputs, lake: Lake, cached: list[DataFrame]
) -> dict[str, Any]:
    def keep(df: DataFrame) -> DataFrame:
        cached.append(df.persist())
        return df

    phases: dict[str, float] = {}
    mark = [time.monotonic()]

    def phase(name: str) -> None:
        """Seconds since the previous phase ended, under ``summary['phase_seconds'][name]``."""
        now = time.monotonic()
        phases[name] = round(now - mark[0], 2)
        mark[0] = now

    started = time.monotonic()
    run_time = dt.datetime.now(dt.UTC).replace(microsecond=0)
    run_id = new_run_id()
    dataset = settings.dataset
    store_url = lake.store_url(dataset)
    report_dir = lake.report_dir("prepare", run_id)
    summary: dict[str, Any] = {
        "run_id": run_id,
        "run_time": run_time.isoformat(),
        "dataset": dataset,
        "store": store_url,
        "report_dir": report_dir,
        "incremental": inputs.incremental,
        "phase_seconds": phases,
    }

    raw = read_metadata(spark, inputs.metadata)
    if inputs.images is not None and not inputs.metadata_only:
        files = list_image_files(spark, inputs.images)  # fail fast on a bad folder
    manifest = store_mod.read_manifest(lake, dataset)
    if inputs.incremental and manifest is not None:
        existing = store_image_ids(spark, store_url)
        raw_ids = raw.withColumn("image_id", F.trim("image_index"))
        already = raw_ids.join(existing, "image_id", "left_semi").count()
        raw = raw_ids.join(existing, "image_id", "left_anti").drop("image_id")
    else:
        already = 0

    checked = keep(validate_metadata(raw))
    rows_read = checked.count()
    valid = checked.where(F.col("reason").isNull())
    bad_meta = checked.where(F.col("reason").isNotNull())
    counts_all = finding_counts(valid)
    n_valid = valid.count()
    summary["metadata"] = {
        "file": inputs.metadata,
        "rows": rows_read + already,
        "rows_considered": rows_read,
        "already_in_store": already,
        "valid_rows": n_valid,
        "patients": valid.select("patient_id").distinct().count(),
        "implausible_ages_set_null": valid.where(F.col("implausible_age")).count(),
        "views": {r["view"]: int(r["count"]) for r in valid.groupBy("view").count().collect()},
        "finding_counts": counts_all,
    }
    if manifest is not None and inputs.incremental:
        label_set = list(manifest.labels)
        store_mod.check_compatible(manifest, label_set, settings.image.size)
    else:
        label_set = choose_label_set(counts_all, settings.labels.findings, settings.labels.min_cases)
        if not label_set:
            raise UsageError(
                f"no finding has labels.min_cases={settings.labels.min_cases} images in {inputs.metadata}: "
                "lower labels.min_cases"
            )
    summary["label_set"] = label_set
    summary["label_set_rule"] = {"findings": list(settings.labels.findings), "min_cases": settings.labels.min_cases}

    if inputs.metadata_only or inputs.images is None:
        summary["mode"] = "metadata-only"
        return _finish(summary, lake, started)
    summary["mode"] = "incremental" if inputs.incremental else "full"
    phase("metadata")

    # -- splits ---------------------------------------------------------------------------
    if inputs.split_lists is not None:
        lists = splits.read_split_lists(spark, *inputs.split_lists)
        with_split = splits.assign_splits_from_lists(valid, lists, settings.split)
    else:
        with_split = splits.assign_splits(valid, settings.split)

    # -- files ----------------------------------------------------------------------------
    with_file, without_file, unique_files, duplicate_files = attach_files(with_split, files)
    with_file = keep(with_file)
    n_candidates = with_file.count()
    n_missing = without_file.count()
    full_over_existing = not inputs.incremental and manifest is not None and not inputs.replace
    if full_over_existing:  # fail before the decode when the files alone cannot keep the store
        refuse_removal(
            spark, store_url, with_file.select("image_id"), dataset, f"{n_candidates:,} images have metadata and a file"
        )
    all_ids = checked.select("image_id")
    if inputs.incremental and manifest is not None:
        all_ids = all_ids.unionByName(store_image_ids(spark, store_url))
    orphans = unique_files.join(all_ids, unique_files["file_name"] == all_ids["image_id"], "left_anti")
    n_orphans = orphans.count()
    n_duplicate_files = duplicate_files.count()
    if n_missing:
        _write_list(without_file.select("image_id", "patient_id", "finding_labels"), f"{report_dir}/missing_images")
    if n_orphans:
        _write_list(orphans.select("file_name", "source_path"), f"{report_dir}/orphan_images")
    if n_duplicate_files:
        _write_list(duplicate_files.select("file_name", "source_path"), f"{report_dir}/duplicate_files")
    if n_missing and inputs.require_images:
        raise UsageError(
            f"{n_missing} metadata rows have no image file under {inputs.images} (--require-images is set): "
            f"see {report_dir}/missing_images, or drop --require-images to ingest what is there"
        )

    phase("files")

    # -- decode on the executors ---------------------------------------------------------
    ingest_date = run_time.date().isoformat()
    parallelism = spark.sparkContext.defaultParallelism
    n_partitions = max(parallelism, math.ceil(n_candidates / 250))
    decoded = keep(decode_images(with_file, settings, label_set, ingest_date, n_partitions))
    good = decoded.where(F.col("reason").isNull())
    bad_images = decoded.where(F.col("reason").isNotNull())
    n_good = good.count()
    phase("decode")

    quarantine = keep(
        _quarantine_rows(bad_meta, dataset, run_id, run_time).unionByName(
            _quarantine_rows(bad_images, dataset, run_id, run_time)
        )
    )
    by_reason = {r["reason"]: int(r["count"]) for r in quarantine.groupBy("reason").count().collect()}
    n_quarantined = sum(by_reason.values())
    considered = rows_read + n_orphans
    fraction = n_quarantined / considered if considered else 0.0
    summary["images"] = {
        "folder": inputs.images,
        "files_found": unique_files.count(),
        "with_metadata": n_candidates,
        "metadata_rows_without_file": n_missing,
        "files_without_metadata": n_orphans,
        "duplicate_files_ignored": n_duplicate_files,
        "converted": {
            r["converted"]: int(r["count"])
            for r in good.where(F.col("converted") != "").groupBy("converted").count().collect()
        },
        "written": 0,
    }
    summary["quarantine"] = {
        "total": n_quarantined,
        "fraction": round(fraction, 6),
        "by_reason": by_reason,
        "max_fraction": settings.quarantine.max_fraction,
    }
    if n_quarantined:
        append_quarantine(spark, quarantine, lake)
        _write_list(quarantine.select("image_id", "source_path", "reason", "detail"), f"{report_dir}/quarantine")
    if fraction > settings.quarantine.max_fraction:
        summary["seconds"] = round(time.monotonic() - started, 1)
        lake.write_json(f"{report_dir}/summary.json", summary)
        raise QuarantineLimitExceeded(
            f"{n_quarantined} of {considered} inputs ({fraction:.1%}) were quarantined, over "
            f"quarantine.max_fraction={settings.quarantine.max_fraction:g}; nothing was added to the store. "
            f"Reasons: {by_reason}. See xray.quarantine (run_id {run_id}) and {report_dir}",
            summary,
        )

    phase("quarantine")

    # -- load -----------------------------------------------------------------------------
    if full_over_existing:
        refuse_removal(spark, store_url, good.select("image_id"), dataset, f"{n_good:,} images decoded")
    append = inputs.incremental and manifest is not None
    if n_good or not append:
        write_store(
            spark,
            good,
            lake,
            dataset,
            run_id,
            append=append,
            n_files=math.ceil(n_good / settings.prepare.images_per_file),
            rowgroup_size_mb=settings.prepare.rowgroup_size_mb,
        )
    # Every run stays in the history, a replacing one too.
    runs = list(manifest.runs) if manifest is not None else []
    runs.append(
        {
            "run_id": run_id,
            "run_time": run_time.isoformat(),
            "mode": summary["mode"] if not inputs.replace or append else "replace",
            "images_added": n_good,
            "metadata": inputs.metadata,
            "images": inputs.images,
        }
    )
    store_mod.write_manifest(
        lake,
        store_mod.StoreManifest(
            dataset=dataset,
            labels=label_set,
            image_size=settings.image.size,
            split=dataclasses.asdict(settings.split) | {"lists": list(inputs.split_lists or [])},
            runs=runs,
        ),
    )
    summary["images"]["written"] = n_good
    phase("write_store")
    summary["studies_rows"] = write_studies(spark, lake, dataset, store_url)
    store_df = spark.read.parquet(store_url)
    summary["store_rows"] = store_df.count()
    summary["splits"] = _split_sizes(store_df)
    store_findings = store_df.select(
        F.when(F.col("finding_labels") == NO_FINDING, F.array().cast("array<string>"))
        .otherwise(F.split("finding_labels", r"\|"))
        .alias("findings")
    )
    summary["store_finding_counts"] = finding_counts(store_findings)
    phase("tables")
    if inputs.bbox:
        boxes = keep(read_bbox(spark, inputs.bbox, dataset))
        write_boxes(spark, boxes, lake, dataset)
        summary["boxes"] = {
            "rows": boxes.count(),
            "images": boxes.select("image_id").distinct().count(),
            "for_stored_images": boxes.join(store_df.select("image_id"), "image_id", "left_semi").count(),
        }
        phase("boxes")
    return _finish(summary, lake, started)


def _finish(summary: dict[str, Any], lake: Lake, started: float) -> dict[str, Any]:
    """Write the bar chart and the summary JSON into the run's report folder."""
    summary["chart"] = f"{summary['report_dir']}/finding_counts.png"
    lake.write_bytes(summary["chart"], report.finding_frequency_chart(summary))
    summary["seconds"] = round(time.monotonic() - started, 1)
    lake.write_json(f"{summary['report_dir']}/summary.json", summary)
    return summary
