"""Where the model looked: Grad-CAM heatmaps for the films a radiologist will open first.

``score.heatmaps`` (``score --heatmaps``): ``none``, ``called`` (every finding called on
every film of the run) or ``top:<N>`` (the findings called on the run's N riskiest films;
a film with none called gets its riskiest finding). The heatmaps are computed after the
run's predictions are published (``top:N`` needs the whole run's ranking), on the
executors, in Arrow batches of at most ``score.batch_size`` films, so memory per Python
worker is bounded whatever the run's size.

The heatmap is the model runtime's ``explain`` (:mod:`xray_spark.model_runtime`): Grad-CAM
for the Keras models this product trains (:mod:`xray_spark.keras_runtime`). A run whose
model's runtime cannot explain draws none and says so.

Each row of ``xray.heatmaps``: the image, the model version, the finding and its
probability, the heatmap as a small 8-bit PNG (:data:`HEATMAP_SIDE` px, the stored image's
square), the peak and the box around the hot region (the connected part of the map at or
above :data:`xray_spark.pictures.HOT_FRACTION` of its peak that holds the peak) in original-image pixels.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd

from xray_spark.lake import catalog
from xray_spark.model_runtime import can_explain
from xray_spark.pictures import hot_region
from xray_spark.score import runtime
from xray_spark.score.runtime import ModelRef

HEATMAP_SIDE = 64

#: What the heatmapper gives per row: the columns of ``xray.heatmaps`` before the run's own.
HEATMAP_SCHEMA = catalog.table("heatmaps").schema(columns=catalog.HEATMAP_FIELDS)


def to_original(value: float, size: int, width: int | None, height: int | None, axis: str) -> float:
    """A stored-image coordinate back in the original image (undoes the pad to a square and the resize)."""
    width = width or size
    height = height or size
    side = max(width, height)
    pad = (side - width) // 2 if axis == "x" else (side - height) // 2
    return value * side / size - pad


def heatmap_rows(cams: np.ndarray, frame: pd.DataFrame, size: int) -> list[dict[str, Any]]:
    """One ``xray.heatmaps`` row per heatmap (``frame``: image_id, finding, probability, originals)."""
    import cv2

    rows = []
    for cam, (_, r) in zip(cams, frame.iterrows(), strict=True):
        (px, py), (bx, by, bw, bh) = hot_region(cam, size)
        width, height = _int_or_none(r["original_width"]), _int_or_none(r["original_height"])
        scale = max(width or size, height or size) / size
        small = cv2.resize(cam, (HEATMAP_SIDE, HEATMAP_SIDE), interpolation=cv2.INTER_LINEAR)
        ok, png = cv2.imencode(".png", np.clip(small * 255 + 0.5, 0, 255).astype(np.uint8))
        assert ok, "OpenCV failed to encode a heatmap"
        rows.append(
            {
                "image_id": r["image_id"],
                "finding": r["finding"],
                "probability": float(r["probability"]),
                "heatmap_png": png.tobytes(),
                "peak_x": to_original(px, size, width, height, "x"),
                "peak_y": to_original(py, size, width, height, "y"),
                "box_x": to_original(bx, size, width, height, "x"),
                "box_y": to_original(by, size, width, height, "y"),
                "box_w": bw * scale,
                "box_h": bh * scale,
            }
        )
    return rows


def _int_or_none(value: Any) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


def make_heatmapper(ref: ModelRef, labels: Sequence[str], batch_size: int):
    """The ``mapInPandas`` function: rows of (image, finding, probability, originals) -> heatmap rows."""
    index = {label: i for i, label in enumerate(labels)}

    def heatmaps(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        yield from heatmap_batches(ref, index, batch_size, batches)

    return heatmaps


def heatmap_batches(
    ref: ModelRef, index: dict[str, int], batch_size: int, batches: Iterator[pd.DataFrame]
) -> Iterator[pd.DataFrame]:
    """The heatmapper's body on a worker: the worker's runtime of the model explains each film's finding."""
    model = runtime.worker_runtime(ref)
    if not can_explain(model):
        raise ValueError(f"the runtime of {ref.model_file} cannot explain its outputs: it draws no heatmaps")
    for frame in batches:
        for start in range(0, len(frame), batch_size):
            part = frame.iloc[start : start + batch_size]
            images = runtime.decode_pngs(part["image"], ref.size)
            cams = model.explain(images, np.array([index[f] for f in part["finding"]]))
            yield pd.DataFrame(heatmap_rows(cams, part, ref.size), columns=HEATMAP_SCHEMA.fieldNames())
