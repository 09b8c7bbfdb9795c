"""The NIH metadata CSV and the bounding-box CSV: read, checked row by row, counted.

:func:`read_metadata` reads every column as a string (no inference) and renames them by
position, so the bracketed NIH header cells never need quoting; :func:`validate_metadata`
parses each row and names the first rule it breaks (its quarantine reason).
"""

from __future__ import annotations

import csv
import gzip
import io
import os
from collections.abc import Sequence
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from xray_spark.errors import UsageError, first_line
from xray_spark.imaging import reasons as q
from xray_spark.labels import ALIASES, FINDINGS, NO_FINDING
from xray_spark.lake import local_path

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
    local = local_path(path)
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
            raise UsageError(f"metadata file {path} cannot be read: {first_line(exc)}") from None
        cells = [c or "" for c in cells] if cells is not None else []
    if not cells:
        raise UsageError(f"metadata file {path} is empty: it needs the NIH header and one row per image")
    check_header(cells, path)
    names = list(METADATA_COLUMNS) + [f"extra_{i}" for i in range(len(cells) - len(METADATA_COLUMNS))]
    # All columns as strings (no inference); renamed by position, so the bracketed NIH
    # header cells never have to be quoted.
    # multiLine: a quoted field may hold a line break and the row stays one row (validation
    # then quarantines it); without it Spark would split the row in two.
    df = rfc4180(spark).option("mode", "PERMISSIVE").option("multiLine", "true").csv(path)
    df = df.toDF(*names[: len(df.columns)])
    return df.select(*METADATA_COLUMNS).withColumn("row_number", F.monotonically_increasing_id())


def rfc4180(spark: SparkSession) -> Any:
    """Spark's CSV reader as RFC 4180 reads CSV: a header row, UTF-8, and ``""`` inside quotes for one ``"``.

    (Spark's own default escape character is a backslash, so ``"a""b.png"`` came back with its quotes in.)
    """
    return spark.read.option("header", "true").option("encoding", "UTF-8").option("quote", '"').option("escape", '"')


def read_bbox(spark: SparkSession, path: str, dataset: str) -> DataFrame:
    """The bounding-box CSV as ``xray.boxes`` (:mod:`xray_spark.lake.catalog`) (``Infiltrate`` -> ``Infiltration``)."""
    local = local_path(path)
    if local is not None and not os.path.isfile(local):
        raise UsageError(f"bounding-box file {local} does not exist: pass --bbox PATH/TO/BBox_List_2017.csv")
    raw = rfc4180(spark).csv(path)
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


def findings_array(raw: F.Column) -> tuple[F.Column, F.Column]:
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


def _rule_columns() -> dict[str, Column]:
    """The parsed fields the rules look at (over the raw string columns)."""
    age_text = F.upper(F.trim(F.col("age_raw")))
    return {
        "age_text": age_text,
        "age_ok": age_text.rlike(r"^[0-9]{1,3}Y?$"),
        "age_value": F.regexp_extract(age_text, r"^([0-9]{1,3})", 1).cast("int"),
        "pid_text": F.trim(F.col("patient_id_raw")),
        "fu_text": F.trim(F.col("follow_up_raw")),
    }


def _reason(c: dict[str, Column]) -> Column:
    """The first rule a row breaks, in the order :func:`validate_metadata` documents; null if none."""
    unsafe = (
        F.col("image_id").contains("/")
        | F.col("image_id").contains("\\")
        | F.col("image_id").startswith(".")
        | F.col("image_id").rlike(r"[\x00-\x1f]")
    )
    line_break = F.lit(False)
    for column in METADATA_COLUMNS:
        line_break = line_break | F.coalesce(F.col(column).rlike("[\r\n]"), F.lit(False))
    age_text = c["age_text"]
    return (
        F.when(F.col("image_id").isNull() | (F.col("image_id") == ""), F.lit(q.MISSING_IMAGE_ID))
        .when(unsafe, F.lit(q.UNSAFE_IMAGE_NAME))
        .when(F.col("occurrence") > 1, F.lit(q.DUPLICATE_IMAGE_ID))
        .when(line_break, F.lit(q.LINE_BREAK_IN_FIELD))
        .when((F.size("unknown_tokens") > 0) | (F.col("finding_labels_raw").isNull()), F.lit(q.UNKNOWN_FINDING))
        .when(F.array_contains("findings", NO_FINDING), F.lit(q.CONTRADICTORY_LABELS))
        .when(~c["pid_text"].rlike(r"^[0-9]{1,9}$") | c["pid_text"].isNull(), F.lit(q.BAD_PATIENT_ID))
        .when(~c["fu_text"].rlike(r"^[0-9]{1,6}$") | c["fu_text"].isNull(), F.lit(q.BAD_FOLLOW_UP))
        .when(age_text.isNotNull() & (age_text != "") & ~c["age_ok"], F.lit(q.BAD_AGE))
    )


def _detail(reason: Column) -> Column:
    """What exactly was wrong, quoting the offending field."""

    def quoted(label: str, column: str) -> Column:
        return F.concat(F.lit(label), F.coalesce(column, F.lit("<empty>")))

    unknown = F.concat(
        F.lit("unknown token(s): "),
        F.concat_ws(", ", "unknown_tokens"),
        F.lit(" in "),
        F.coalesce(F.col("finding_labels_raw"), F.lit("<empty>")),
    )
    return (
        F.when(reason == q.UNKNOWN_FINDING, unknown)
        .when(reason == q.CONTRADICTORY_LABELS, F.concat(F.lit("Finding Labels is "), F.col("finding_labels_raw")))
        .when(reason == q.LINE_BREAK_IN_FIELD, F.lit("a quoted field holds a line break; the row was kept whole"))
        .when(reason == q.BAD_AGE, F.concat(F.lit("Patient Age is "), F.col("age_raw")))
        .when(reason == q.BAD_PATIENT_ID, quoted("Patient ID is ", "patient_id_raw"))
        .when(reason == q.BAD_FOLLOW_UP, quoted("Follow-up # is ", "follow_up_raw"))
        .when(reason == q.DUPLICATE_IMAGE_ID, F.concat(F.lit("row repeats image id "), F.col("image_id")))
        .when(reason == q.UNSAFE_IMAGE_NAME, F.concat(F.lit("image name "), F.col("image_id")))
        .when(reason == q.MISSING_IMAGE_ID, F.lit("empty Image Index"))
    )


def _number(col: str, kind: str) -> Column:
    text = F.trim(F.col(col))
    return F.when(text.rlike(r"^[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?$"), text.cast(kind))


def validate_metadata(df: DataFrame) -> DataFrame:
    """Parse and check each metadata row; ``reason`` and ``detail`` say why a row is rejected.

    Rows with a null ``reason`` are valid. The first failing rule names the reason, in
    this order: missing id, unsafe name, duplicate id, a line break in a field, unknown
    finding, contradictory labels, bad patient id, bad follow-up, bad age.
    """
    findings, unknown = findings_array(F.col("finding_labels_raw"))
    first = Window.partitionBy("image_id").orderBy("row_number")
    out = (
        df.withColumn("image_id", F.trim(F.col("image_index")))
        .withColumn("findings", findings)
        .withColumn("unknown_tokens", unknown)
        .withColumn("occurrence", F.row_number().over(first))
    )
    c = _rule_columns()
    reason = _reason(c)
    age_ok, age_value = c["age_ok"], c["age_value"]
    return out.select(
        "row_number",
        "image_id",
        F.when(F.size("findings") > 0, F.concat_ws("|", "findings"))
        .otherwise(F.lit(NO_FINDING))
        .alias("finding_labels"),
        "findings",
        c["pid_text"].cast("int").alias("patient_id"),
        c["fu_text"].cast("int").alias("follow_up"),
        F.when(age_ok & (age_value <= MAX_PLAUSIBLE_AGE), age_value).alias("age"),
        (age_ok & (age_value > MAX_PLAUSIBLE_AGE)).alias("implausible_age"),
        F.coalesce(F.upper(F.trim("sex_raw")), F.lit("")).alias("sex"),
        F.coalesce(F.upper(F.trim("view_raw")), F.lit("")).alias("view"),
        _number("width_raw", "double").cast("int").alias("original_width"),
        _number("height_raw", "double").cast("int").alias("original_height"),
        _number("spacing_x_raw", "float").alias("pixel_spacing_x"),
        _number("spacing_y_raw", "float").alias("pixel_spacing_y"),
        reason.alias("reason"),
        _detail(reason).alias("detail"),
    )


def findings_from_labels(finding_labels: Column) -> Column:
    """The stored ``finding_labels`` text as an array of findings (``No Finding`` and unlabelled -> empty)."""
    return (
        F.when((finding_labels == NO_FINDING) | (finding_labels == ""), F.array().cast("array<string>"))
        .otherwise(F.split(finding_labels, r"\|"))
        .alias("findings")
    )
