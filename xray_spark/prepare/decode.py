"""Decode on the executors: each candidate row's file read, checked, converted, resized and encoded.

:func:`decode_images` runs :func:`make_decoder`'s function in ``mapInPandas``; the rows
that come back have the store's columns plus the verdict (``reason``/``detail``, null for
a good image) and what was converted (``rgba``, ``rgb``, ``16bit`` or empty).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import types as T

from xray_spark.config import Settings
from xray_spark.imaging import decode as img
from xray_spark.imaging.reasons import UNREADABLE_FILE
from xray_spark.labels import multi_hot, sample_weight
from xray_spark.lake.schema import XraySchema, encode_labels
from xray_spark.prepare.files import read_bytes

_DECODED_EXTRA = [
    T.StructField("reason", T.StringType(), True),
    T.StructField("detail", T.StringType(), True),
    T.StructField("converted", T.StringType(), True),
    # A DICOM film's Pixel Data SHA-256 (privacy.write_film_map, outside the lake); never in the store.
    T.StructField("pixel_sha256", T.StringType(), True),
    # The reader's display picture (JPEG, web.display_max_side), for xray.display_pictures; never in the store.
    T.StructField("display", T.BinaryType(), True),
    # Why a good film has no display picture (BURNED_IN), else null.
    T.StructField("display_note", T.StringType(), True),
]
#: A film whose header says text is burnt into its pixels gets no display picture: at display size that text (a
#: name, a birth date) would be legible, and the lake holds no identity. Its thumbnail, too small to read, stays.
BURNED_IN = "burned_in_annotation"
#: Store columns the decoder computes; the others are copied from the candidate row.
_COMPUTED = {
    XraySchema.image.name,
    XraySchema.labels.name,
    XraySchema.sample_weight.name,
    XraySchema.ingest_date.name,
}


def decoded_schema() -> T.StructType:
    """The store's columns, all nullable (a rejected image has no pixels), plus the verdict."""
    fields = [T.StructField(f.name, f.dataType, True) for f in XraySchema.as_spark_schema().fields]
    return T.StructType(fields + _DECODED_EXTRA)


def image_limits(settings: Settings) -> img.ImageLimits:
    """The decoder's bounds from ``image.*``."""
    image = settings.image
    return img.ImageLimits(
        max_pixels=image.max_pixels, max_decoded_bytes=image.max_decoded_bytes, min_side=image.min_side
    )


def _optional(value: Any, kind: type) -> Any:
    return None if pd.isna(value) else kind(value)


def _decode_one(
    path: str, size: int, limits: img.ImageLimits, max_file_bytes: int, display: tuple[int, int]
) -> dict[str, Any]:
    """The encoded image, its display picture (``display``: the long side, 0 for none, and the JPEG quality) and
    what was converted, or the quarantine reason and detail."""
    image_field = XraySchema.image
    nothing = {"image": None, "converted": None, "pixel_sha256": None, "display": None, "display_note": None}
    try:
        data = read_bytes(path, max_file_bytes)
        gray, facts = img.load_film(data, limits)
    except OSError as exc:
        detail = f"{type(exc).__name__}: {exc.strerror or 'cannot be read'}"
        return nothing | {"reason": UNREADABLE_FILE, "detail": detail}
    except img.ImageError as exc:
        return nothing | {"reason": exc.reason, "detail": exc.detail}
    encoded = bytes(image_field.codec.encode(image_field, img.square_resize(gray, size)))
    max_side, quality = display
    shown = img.display_jpeg(gray, max_side, quality) if max_side and not facts["burned_in"] else None
    return {
        "image": encoded,
        "reason": None,
        "detail": None,
        "converted": str(facts["converted"]),
        "pixel_sha256": str(facts["pixel_sha256"]) or None,
        "display": shown,
        "display_note": BURNED_IN if facts["burned_in"] else None,
    }


def make_decoder(
    label_set: Sequence[str],
    size: int,
    limits: img.ImageLimits,
    max_file_bytes: int,
    weight_base: float,
    weight_per_finding: float,
    ingest_date: str,
    display: tuple[int, int] = (0, 90),
):
    """The function that ``mapInPandas`` runs on the executors (picklable, settings bound)."""
    labels = list(label_set)
    field_names = [f.name for f in decoded_schema().fields]

    def store_row(row: Any) -> dict[str, Any]:
        findings = list(row.findings) if row.findings is not None else []
        vector = multi_hot(findings, labels)
        return {
            "image_id": row.image_id,
            "patient_id": int(row.patient_id),
            "follow_up": int(row.follow_up),
            "age": _optional(row.age, int),
            "sex": row.sex,
            "view": row.view,
            "original_width": _optional(row.original_width, int),
            "original_height": _optional(row.original_height, int),
            "pixel_spacing_x": _optional(row.pixel_spacing_x, float),
            "pixel_spacing_y": _optional(row.pixel_spacing_y, float),
            "split": row.split,
            "labels": encode_labels(vector),
            "finding_labels": row.finding_labels,
            "sample_weight": sample_weight(int(vector.sum()), weight_base, weight_per_finding),
            "ingest_date": ingest_date,
            "source_path": row.source_path,
        } | _decode_one(getattr(row, "read_path", None) or row.source_path, size, limits, max_file_bytes, display)

    def decode_partition(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            rows = [store_row(row) for row in batch.itertuples(index=False)]
            yield pd.DataFrame({name: [r[name] for r in rows] for name in field_names}, columns=field_names)

    return decode_partition


def decode_images(
    candidates: DataFrame, settings: Settings, label_set: Sequence[str], ingest_date: str, n_partitions: int
) -> DataFrame:
    """Read, check, convert and resize every candidate image on the executors.

    The result has the store's columns plus ``reason``/``detail`` (null for a good image)
    and ``converted`` (``rgba``, ``rgb``, ``16bit`` or empty).
    """
    # The metadata the store keeps, plus the findings the labels are made from.
    columns = [f.name for f in XraySchema.fields.values() if f.name not in _COMPUTED] + ["findings"]
    if "read_path" in candidates.columns:  # a DICOM file's path, read here and never stored
        columns.append("read_path")
    decoder = make_decoder(
        label_set,
        settings.image.size,
        image_limits(settings),
        settings.image.max_file_bytes,
        settings.labels.sample_weight.base,
        settings.labels.sample_weight.per_finding,
        ingest_date,
        (settings.web.display_max_side, settings.web.display_quality),
    )
    return candidates.select(*columns).repartition(n_partitions).mapInPandas(decoder, decoded_schema())
