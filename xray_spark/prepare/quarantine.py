"""Why an input was not stored: the quarantine reasons, and the rows of ``xray.quarantine``.

Nothing is dropped silently: every metadata row ends up in the store, in
``xray.quarantine`` with one of :data:`REASONS`, or in the run's list of rows without an
image file.
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from xray_spark import tables
from xray_spark.lake import Lake
from xray_spark.prepare import images as img
from xray_spark.schema import QUARANTINE_SCHEMA

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


def quarantine_rows(df: DataFrame, dataset: str, run_id: str, run_time: dt.datetime) -> DataFrame:
    """Rejected rows (with ``reason`` and ``detail``) as ``xray.quarantine`` rows of this run."""
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


def append_quarantine(rows: DataFrame, lake: Lake) -> None:
    tables.write_table(rows.select(*QUARANTINE_SCHEMA.fieldNames()), lake, "quarantine", mode="append")
