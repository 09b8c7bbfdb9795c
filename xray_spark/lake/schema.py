"""The one Petastorm Unischema of the training store, and the schema of ``xray.predictions`` for a model's labels.

Every other table is declared in :mod:`xray_spark.lake.catalog`.

Refer to fields as ``XraySchema.image.name``, never as string literals. The image side and
the number of labels are configurable, so those two shapes are left open here; the store's
manifest (``xray_spark.lake.store``) records the values a store was built with.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from petastorm.codecs import CompressedImageCodec, ScalarCodec
from petastorm.unischema import Unischema, UnischemaField
from pyspark.sql.types import (
    ArrayType,
    FloatType,
    IntegerType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from xray_spark.labels import probability_column, raw_score_column


def encode_labels(vector: np.ndarray) -> str:
    """A multi-hot vector as a string of ``0``/``1`` characters, in label-set order (``"010000"``)."""
    values = np.asarray(vector).ravel()
    if not np.isin(values, (0, 1)).all():
        raise ValueError(f"a label vector holds 0 and 1 only, got {values.tolist()}")
    return "".join("1" if v else "0" for v in values)


def decode_labels(text: str) -> np.ndarray:
    """The float32 multi-hot vector of :func:`encode_labels` (``np.frombuffer``: no parser, no ``np.load``)."""
    codes = np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    if codes.size and (codes.min() < 48 or codes.max() > 49):
        raise ValueError(f"labels {text!r} are not a string of 0 and 1")
    return (codes - 48).astype(np.float32)


XraySchema = Unischema(
    "XraySchema",
    [
        UnischemaField("image_id", np.str_, (), ScalarCodec(StringType()), False),
        UnischemaField("patient_id", np.int32, (), ScalarCodec(IntegerType()), False),
        UnischemaField("follow_up", np.int32, (), ScalarCodec(IntegerType()), False),
        # Null where the metadata gives an implausible age (the 2017 file has ages over 150).
        UnischemaField("age", np.int32, (), ScalarCodec(IntegerType()), True),
        UnischemaField("sex", np.str_, (), ScalarCodec(StringType()), False),
        UnischemaField("view", np.str_, (), ScalarCodec(StringType()), False),
        UnischemaField("original_width", np.int32, (), ScalarCodec(IntegerType()), True),
        UnischemaField("original_height", np.int32, (), ScalarCodec(IntegerType()), True),
        UnischemaField("pixel_spacing_x", np.float32, (), ScalarCodec(FloatType()), True),
        UnischemaField("pixel_spacing_y", np.float32, (), ScalarCodec(FloatType()), True),
        UnischemaField("split", np.str_, (), ScalarCodec(StringType()), False),
        # 8-bit grayscale, image.size x image.size, stored PNG-compressed (lossless).
        UnischemaField("image", np.uint8, (None, None), CompressedImageCodec("png"), False),
        # Multi-hot over the store's label set, in the manifest's label order, as "0"/"1"
        # characters (encode_labels / decode_labels). Not Petastorm's NdarrayCodec: it
        # decodes with np.load, whose header parser (ast.literal_eval) is not thread-safe in
        # CPython 3.11 (gh-106905), and Petastorm's reader decodes in threads.
        UnischemaField("labels", np.str_, (), ScalarCodec(StringType()), False),
        UnischemaField("finding_labels", np.str_, (), ScalarCodec(StringType()), False),
        UnischemaField("sample_weight", np.float32, (), ScalarCodec(FloatType()), False),
        UnischemaField("ingest_date", np.str_, (), ScalarCodec(StringType()), False),
        UnischemaField("source_path", np.str_, (), ScalarCodec(StringType()), False),
    ],
)

#: Store columns copied into ``xray.studies`` (everything but the pixels and the encoded labels);
#: the table adds ``findings`` (an array), ``store_path`` and ``dataset`` (its partition).
STUDY_FIELDS: tuple[str, ...] = tuple(
    f.name for f in XraySchema.fields.values() if f.name not in (XraySchema.image.name, XraySchema.labels.name)
)


def predictions_schema(labels: Sequence[str]) -> StructType:
    """``xray.predictions`` (the partition columns ``score_date`` and ``run_id`` come from the folders)."""
    return StructType(
        [
            StructField("image_id", StringType(), False),
            StructField("patient_id", IntegerType(), False),
            StructField("follow_up", IntegerType(), False),
            StructField("view", StringType(), False),
            StructField("dataset", StringType(), False),
            StructField("model_version", StringType(), False),
            StructField("scored_at", TimestampType(), False),
        ]
        + [StructField(c, FloatType(), False) for c in map(probability_column, labels)]
        + [
            StructField("top_finding", StringType(), False),
            StructField("top_probability", FloatType(), False),
            StructField("called", ArrayType(StringType()), False),
            StructField("risk_score", FloatType(), True),
            StructField("risk_finding", StringType(), True),
        ]
        + [StructField(c, FloatType(), True) for c in map(raw_score_column, labels)]
    )
