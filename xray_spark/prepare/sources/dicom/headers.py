"""A hospital's DICOM export as prepare's input: headers read on the executors, no CSV needed.

Files are found by content (the ``DICM`` marker at byte 128), whatever their names, in
nested folders. Each header is read on an executor without its pixel data; only the
attributes in :data:`~xray_spark.privacy.KEPT` come back (the header is read through a
:class:`~xray_spark.privacy.KeptHeader`, which refuses any other), with the Patient ID as
its keyed pseudonym and the age computed there. DICOMDIRs and files that are not DICOM
are listed; valid objects that are not frontal chest radiographs are skipped with a
reason (:data:`SKIP_REASONS`); broken headers are quarantined.
"""

from __future__ import annotations

import datetime as dt
import os
import stat
from collections.abc import Iterator
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import types as T

from xray_spark.errors import ImageError
from xray_spark.imaging import reasons
from xray_spark.imaging.dicom_pixels import HEADER_ALLOWANCE, check_inflated_size
from xray_spark.prepare.files import real_path
from xray_spark.privacy import KeptHeader, derived_values

DICOM_MARKER_OFFSET = 128
DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
RADIOGRAPH_MODALITIES = ("CR", "DX")
LATERAL_VIEWS = ("LL", "RL", "LLD", "RLD", "LAT", "LATERAL", "LLO", "RLO")

#: Why a valid DICOM object does not go on (listed, never counted against quarantine.max_fraction).
SKIP_REASONS = {
    "no_pixel_data": "an object without an image (a structured report, a presentation state, key objects)",
    "not_a_radiograph": "Modality is not CR or DX (the detail names it)",
    "not_chest": "Body Part Examined is set and is not CHEST",
    "lateral_view": "View Position is a lateral view",
    "multi_frame": "more than one frame",
}

HEADER_SCHEMA = T.StructType(
    [
        T.StructField("source_path", T.StringType(), False),  # the file's opaque reference (privacy.source_ref)
        T.StructField("read_path", T.StringType(), False),  # where the executors read it: never written to the lake
        T.StructField("kind", T.StringType(), False),  # dicom | dicomdir | not_dicom
        T.StructField("reason", T.StringType(), True),  # quarantine reason of a broken header
        T.StructField("detail", T.StringType(), True),
        T.StructField("skip_reason", T.StringType(), True),
        T.StructField("skip_detail", T.StringType(), True),
        T.StructField("sop_uid", T.StringType(), True),
        T.StructField("study_uid", T.StringType(), True),
        T.StructField("series_uid", T.StringType(), True),
        T.StructField("accession_number", T.StringType(), True),
        T.StructField("patient_pseudonym", T.StringType(), True),
        T.StructField("age", T.IntegerType(), True),
        T.StructField("sex", T.StringType(), True),
        T.StructField("study_datetime", T.TimestampType(), True),
        T.StructField("view", T.StringType(), True),
        T.StructField("modality", T.StringType(), True),
        T.StructField("body_part", T.StringType(), True),
        T.StructField("original_width", T.IntegerType(), True),
        T.StructField("original_height", T.IntegerType(), True),
        T.StructField("pixel_spacing_x", T.FloatType(), True),
        T.StructField("pixel_spacing_y", T.FloatType(), True),
        T.StructField("photometric", T.StringType(), True),
        T.StructField("bits_stored", T.IntegerType(), True),
        T.StructField("transfer_syntax", T.StringType(), True),
        T.StructField("manufacturer", T.StringType(), True),
        T.StructField("model_name", T.StringType(), True),
    ]
)


def skip_reason(ds: Any) -> tuple[str, str] | None:
    """(reason, detail) when a valid object is not a single-frame frontal chest radiograph."""
    if "Rows" not in ds or "Columns" not in ds:
        return "no_pixel_data", f"SOP Class {ds.get('SOPClassUID', 'unknown')}"
    modality = str(ds.get("Modality", "")).upper()
    if modality not in RADIOGRAPH_MODALITIES:
        return "not_a_radiograph", f"Modality {modality or 'missing'}"
    body_part = str(ds.get("BodyPartExamined", "") or "").strip().upper()
    if body_part and body_part != "CHEST":
        return "not_chest", f"Body Part Examined {body_part}"
    view = str(ds.get("ViewPosition", "") or "").strip().upper()
    if view in LATERAL_VIEWS:
        return "lateral_view", f"View Position {view}"
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        return "multi_frame", f"{frames} frames"
    return None


def _spacing(ds: Any) -> tuple[float | None, float | None]:
    """(x, y) in mm: Pixel Spacing, else Imager Pixel Spacing (DICOM gives row spacing first)."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        if value is not None and len(value) == 2:
            return float(value[1]), float(value[0])
    return None, None


def _study_datetime(ds: Any) -> dt.datetime | None:
    date = str(ds.get("StudyDate", "") or "").strip()
    time = str(ds.get("StudyTime", "") or "").strip().split(".")[0].ljust(6, "0")[:6]
    try:
        return dt.datetime.strptime(date[:8] + (time if time.isdigit() else "000000"), "%Y%m%d%H%M%S")
    except ValueError:
        return None


def header_row(ds: Any, key: bytes) -> dict[str, Any]:
    """The kept attributes of one header (no name, birth date or other identifying field)."""
    syntax = str(ds.file_meta.get("TransferSyntaxUID", "")) if hasattr(ds, "file_meta") else None
    return kept_row(KeptHeader(ds, syntax)) | derived_values(ds, key)


def kept_row(ds: KeptHeader) -> dict[str, Any]:
    """The header row's columns taken from the kept attributes."""
    spacing_x, spacing_y = _spacing(ds)
    sex = str(ds.get("PatientSex", "") or "").strip().upper()
    skipped = skip_reason(ds)
    return {
        "skip_reason": skipped[0] if skipped else None,
        "skip_detail": skipped[1] if skipped else None,
        "sop_uid": str(ds.get("SOPInstanceUID", "") or "") or None,
        "study_uid": str(ds.get("StudyInstanceUID", "") or "") or None,
        "series_uid": str(ds.get("SeriesInstanceUID", "") or "") or None,
        "accession_number": str(ds.get("AccessionNumber", "") or "") or None,
        "sex": sex if sex in ("M", "F") else "",
        "study_datetime": _study_datetime(ds),
        "view": str(ds.get("ViewPosition", "") or "").strip().upper(),
        "modality": str(ds.get("Modality", "") or "").upper(),
        "body_part": str(ds.get("BodyPartExamined", "") or "").strip().upper(),
        "original_width": int(ds.Columns) if "Columns" in ds else None,
        "original_height": int(ds.Rows) if "Rows" in ds else None,
        "pixel_spacing_x": spacing_x,
        "pixel_spacing_y": spacing_y,
        "photometric": str(ds.get("PhotometricInterpretation", "") or ""),
        "bits_stored": int(ds.BitsStored) if "BitsStored" in ds else None,
        "transfer_syntax": ds.transfer_syntax,
        "manufacturer": str(ds.get("Manufacturer", "") or "").strip() or None,
        "model_name": str(ds.get("ManufacturerModelName", "") or "").strip() or None,
    }


def read_header(
    path: str, key: bytes, max_file_bytes: int, ref: str | None = None, max_decoded_bytes: int = 128 << 20
) -> dict[str, Any]:
    """One file's row of :data:`HEADER_SCHEMA` (never raises: a broken file gets a reason).

    ``ref`` is what the lake calls the file (its ``source_path``): never its path, whose
    folders a PACS export often names after the patient.

    Only regular files are opened (a FIFO or a device is quarantined unread), and only up
    to the pixel data.
    """
    import pydicom

    row: dict[str, Any] = {"source_path": ref or path, "read_path": path, "kind": "not_dicom"}
    path = real_path(path)  # a name whose bytes are not UTF-8 came as hex
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            return row | {"kind": "unknown", "reason": reasons.NOT_A_FILE, "detail": "not a regular file"}
        if info.st_size > max_file_bytes:
            detail = f"the file has {info.st_size:,} bytes, over image.max_file_bytes={max_file_bytes:,}"
            return row | {"kind": "unknown", "reason": reasons.FILE_TOO_LARGE, "detail": detail}
        with open(path, "rb") as fh:
            lead = fh.read(DICOM_MARKER_OFFSET + 4)
    except OSError as exc:
        return row | {"kind": "unknown", "reason": reasons.UNREADABLE_FILE, "detail": type(exc).__name__}
    if lead[DICOM_MARKER_OFFSET:] != b"DICM":
        return row
    row["kind"] = "dicom"
    try:
        with open(path, "rb") as fh:
            check_inflated_size(fh, max_decoded_bytes + HEADER_ALLOWANCE)
    except ImageError as exc:
        return row | {"reason": exc.reason, "detail": exc.detail}
    except OSError as exc:
        return row | {"kind": "unknown", "reason": reasons.UNREADABLE_FILE, "detail": type(exc).__name__}
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if str(ds.file_meta.get("MediaStorageSOPClassUID", "")) == DICOMDIR_CLASS:
            return row | {"kind": "dicomdir"}
        if "SOPInstanceUID" not in ds:  # pydicom returns what it read of a header cut short
            detail = "the DICOM header ends before its SOP Instance UID: the file is cut short or damaged"
            return row | {"reason": reasons.UNDECODABLE, "detail": detail}
        if "Rows" not in ds and _is_image_class(ds):  # an image object without pixels is cut short, not a report
            detail = f"the header of this {ds.SOPClassUID.name} ends before its pixel data: the file is cut short"
            return row | {"reason": reasons.UNDECODABLE, "detail": detail}
        return row | header_row(ds, key)
    except Exception as exc:  # pydicom raises many types for a broken header
        detail = f"DICOM header could not be read ({type(exc).__name__})"
        return row | {"reason": reasons.UNDECODABLE, "detail": detail}


def _is_image_class(ds: Any) -> bool:
    """Whether the SOP Class is an image storage class (CR, DX, CT ...), not a report or a state."""
    return "Image Storage" in str(getattr(ds.get("SOPClassUID"), "name", ""))


def make_header_reader(key: bytes, max_file_bytes: int, max_decoded_bytes: int):
    """The function ``mapInPandas`` runs on the executors: paths in, header rows out."""
    names = HEADER_SCHEMA.fieldNames()

    def read_partition(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            pairs = zip(batch["read_path"], batch["source_path"], strict=True)
            rows = [read_header(path, key, max_file_bytes, ref, max_decoded_bytes) for path, ref in pairs]
            yield pd.DataFrame({name: [r.get(name) for r in rows] for name in names}, columns=names)

    return read_partition


def read_headers(
    files: DataFrame, key: bytes, max_file_bytes: int, n_partitions: int, max_decoded_bytes: int
) -> DataFrame:
    """Every listed file's header row, read on the executors."""
    reader = make_header_reader(key, max_file_bytes, max_decoded_bytes)
    return files.select("source_path", "read_path").repartition(n_partitions).mapInPandas(reader, HEADER_SCHEMA)
