"""The result objects built on the executors, in Arrow batches, as scoring and heatmaps are.

Each row brings a film's results and where its source file lies (the film map's path, which
only the executors and the driver's memory ever hold); :func:`make_builder`'s function reads
the file, checks that it is still the film that was scored (its SOP Instance UID and the
SHA-256 of its Pixel Data as ingest recorded them), builds the SR and optionally the SC
(:mod:`.objects`) and returns them as DICOM Part 10 bytes. A film whose source file is gone
or changed gets no object and the reason, which delivery records.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import types as T

from xray_spark.deliver.objects import FilmResult, ModelFacts, Region, build_sc, build_sr

BUILT_SCHEMA = T.StructType(
    [
        T.StructField("image_id", T.StringType(), False),
        T.StructField("sr_uid", T.StringType(), True),
        T.StructField("sc_uid", T.StringType(), True),
        T.StructField("sr", T.BinaryType(), True),
        T.StructField("sc", T.BinaryType(), True),
        T.StructField("error", T.StringType(), True),
        T.StructField("source_problem", T.BooleanType(), True),  # the error is the source file's (not the objects')
    ]
)

SOURCE_MOVED = "source file moved"
SOURCE_CHANGED = "source file changed"
SOURCE_UNREADABLE = "source file unreadable"


class SourceProblem(Exception):
    """The film's source file cannot be used: it moved, changed or cannot be read since ingest."""


def read_source(path: str, sop_uid: str, pixel_sha256: str, max_file_bytes: int) -> tuple[Any, bytes]:
    """(dataset, file bytes) of a film's source file, checked to be the film ingest stored."""
    from pydicom import dcmread

    try:
        size = os.path.getsize(path)
        if size > max_file_bytes:
            raise SourceProblem(f"{SOURCE_CHANGED}: {size:,} bytes, over image.max_file_bytes")
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise SourceProblem(f"{SOURCE_MOVED}: no file where ingest read it") from None
    except OSError as exc:
        raise SourceProblem(f"{SOURCE_UNREADABLE} ({type(exc).__name__})") from None
    try:
        ds = dcmread(io.BytesIO(data))
        found_uid, pixels = str(ds.SOPInstanceUID), bytes(ds.PixelData)
    except Exception as exc:  # pydicom raises many kinds for a damaged file
        raise SourceProblem(f"{SOURCE_CHANGED}: no longer a readable DICOM film ({type(exc).__name__})") from None
    if found_uid != sop_uid:
        raise SourceProblem(f"{SOURCE_CHANGED}: it now holds another SOP Instance UID")
    if hashlib.sha256(pixels).hexdigest() != pixel_sha256:
        raise SourceProblem(f"{SOURCE_CHANGED}: its pixel data differ from what was scored")
    return ds, data


def film_result(row: Any, labels: tuple[str, ...]) -> FilmResult:
    """A batch row's results: probabilities, called findings, heatmap regions."""
    regions = tuple(
        Region(
            str(r["finding"]),
            float(r["probability"]),
            (r["box_x"], r["box_y"], r["box_w"], r["box_h"]),
            bytes(r["heatmap_png"]),
        )
        for r in (row.regions if row.regions is not None else [])
    )
    probabilities = {label: float(p) for label, p in zip(labels, row.probabilities, strict=True)}
    called = frozenset(row.called) if row.called is not None else frozenset()
    risk = row.risk_finding if isinstance(row.risk_finding, str) else None
    return FilmResult(str(row.image_id), probabilities, called, regions, risk)


@dataclasses.dataclass(frozen=True)
class Pictures:
    """The Secondary Captures to build: how a film is displayed, their longest side, and for a film with no finding
    called, an SC that says so (``notice``) or none (``none``; ``deliver.sc_without_call``)."""

    display: Callable[[bytes], np.ndarray]
    max_side: int
    without_call: str = "notice"


def make_builder(model: ModelFacts, root: str, pictures: Pictures | None, max_file_bytes: int):
    """The function ``mapInPandas`` runs on the executors: films in, their result objects' bytes out."""
    names = BUILT_SCHEMA.fieldNames()

    def build_one(row: Any) -> dict[str, Any]:
        try:
            source, data = read_source(row.path, row.image_id, row.pixel_sha256, max_file_bytes)
        except SourceProblem as exc:
            return {"image_id": row.image_id, "error": str(exc), "source_problem": True}
        film = film_result(row, model.labels)
        sr = build_sr(source, film, model, root)
        out = {"image_id": row.image_id, "sr_uid": str(sr.SOPInstanceUID), "sr": _part10(sr)}
        if pictures is not None and (film.called or pictures.without_call == "notice"):
            sc = build_sc(source, pictures.display(data), film, model, root, pictures.max_side)
            out |= {"sc_uid": str(sc.SOPInstanceUID), "sc": _part10(sc)}
        return out

    def build_partition(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            rows = [_safely(build_one, row) for row in batch.itertuples(index=False)]
            yield pd.DataFrame({name: [r.get(name) for r in rows] for name in names}, columns=names)

    build_partition.secondary_capture = pictures is not None  # type: ignore[attr-defined]
    return build_partition


def _safely(build_one: Callable[[Any], dict[str, Any]], row: Any) -> dict[str, Any]:
    """One film's objects, or the reason it has none: a film the writer refuses stops no other film."""
    try:
        return build_one(row)
    except Exception as exc:  # highdicom validates and raises ValueError, TypeError, AttributeError ...
        # The type only: a writer's message may quote a header value, and the table holds no patient data.
        return {"image_id": row.image_id, "error": f"result object not built ({type(exc).__name__})"}


def _part10(ds: Any) -> bytes:
    """The object as a Part 10 file whose file meta names xray-spark as the implementation that wrote it."""
    from xray_spark.uids import IMPLEMENTATION_CLASS_UID, implementation_version_name

    ds.file_meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    ds.file_meta.ImplementationVersionName = implementation_version_name()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
