"""Where the model looked: Grad-CAM heatmaps for the films a radiologist will open first.

``score.heatmaps`` (``score --heatmaps``): ``none``, ``called`` (every finding called on
every film of the run) or ``top:<N>`` (the findings called on the run's N riskiest films;
a film with none called gets its riskiest finding). The heatmaps are computed after the
run's predictions are published (``top:N`` needs the whole run's ranking), on the
executors, in Arrow batches of at most ``score.batch_size`` films, so memory per Python
worker is bounded whatever the run's size.

Grad-CAM (Selvaraju et al., ICCV 2017): the gradient of the finding's score with respect
to the last convolutional feature map, averaged over the map, weights the map's channels;
the weighted sum, clipped at 0 and scaled to its maximum, is the heatmap. The score is the
finding's logit (the ``logits`` layer, before the sigmoid), as the paper takes the class
score before the softmax: on the films the worklist puts first the probability is often
1.0 in float32, where its gradient is exactly 0 and the heatmap would be blank. It needs
no change to the model and one forward and backward pass per finding. The last
convolutional map is 16 x 16 for ``small_cnn`` at 128 px (8 px a cell) and 7 x 7 for
DenseNet-121 at 224 px (32 px a cell): the box around the hot region is as coarse as that.

Each row of ``xray.heatmaps``: the image, the model version, the finding and its
probability, the heatmap as a small 8-bit PNG (:data:`HEATMAP_SIDE` px, the stored image's
square), the peak and the box around the hot region (the connected part of the map at or
above :data:`HOT_FRACTION` of its peak that holds the peak) in original-image pixels.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import types as T

from xray_spark.score import runtime
from xray_spark.score.runtime import ModelRef

HEATMAP_SIDE = 64
HOT_FRACTION = 0.5

HEATMAP_SCHEMA = T.StructType(
    [
        T.StructField("image_id", T.StringType(), False),
        T.StructField("finding", T.StringType(), False),
        T.StructField("probability", T.FloatType(), False),
        T.StructField("heatmap_png", T.BinaryType(), False),
        T.StructField("peak_x", T.FloatType(), False),
        T.StructField("peak_y", T.FloatType(), False),
        T.StructField("box_x", T.FloatType(), False),
        T.StructField("box_y", T.FloatType(), False),
        T.StructField("box_w", T.FloatType(), False),
        T.StructField("box_h", T.FloatType(), False),
    ]
)


def feature_layer(model: Any) -> Any:
    """The last layer whose output is a spatial feature map (4-D, not a pooling layer)."""
    for layer in reversed(model.layers):
        shape = getattr(layer, "output_shape", None)
        spatial = isinstance(shape, tuple) and len(shape) == 4 and (shape[1] or 0) > 1 and (shape[2] or 0) > 1
        if spatial and "pool" not in type(layer).__name__.lower():
            return layer
    raise ValueError(f"model {model.name} has no convolutional feature map for Grad-CAM")


def score_layer(model: Any) -> Any:
    """The layer whose output Grad-CAM differentiates: the logits before the sigmoid where the model names them."""
    try:
        return model.get_layer("logits")
    except ValueError:
        return model.layers[-1]  # a model without one: its probabilities (saturate at the extremes)


def grad_cam_model(model: Any) -> Any:
    """A model with two outputs: the last feature map and the findings' scores (logits)."""
    from xray_spark.models import keras

    k = keras()
    return k.Model(model.inputs, [feature_layer(model).output, score_layer(model).output])


def grad_cam(cam_model: Any, images: np.ndarray, findings: np.ndarray) -> np.ndarray:
    """Heatmaps in [0, 1] (N x h x w) for ``images`` (N x S x S x 1, uint8), finding index per image."""
    from xray_spark.tf_quiet import import_tensorflow

    tf = import_tensorflow()

    out = None
    for f in np.unique(findings):
        rows = np.flatnonzero(findings == f)
        batch = tf.convert_to_tensor(images[rows])
        with tf.GradientTape() as tape:
            maps, scores = cam_model(batch, training=False)
            score = tf.cast(scores[:, int(f)], tf.float32)
        grads = tape.gradient(score, maps)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        cams = tf.nn.relu(tf.reduce_sum(weights * maps, axis=-1)).numpy()
        if out is None:
            out = np.zeros((len(images), *cams.shape[1:]), dtype=np.float32)
        peak = cams.reshape(len(rows), -1).max(axis=1)
        out[rows] = cams / np.where(peak > 0, peak, 1.0)[:, None, None]
    return out if out is not None else np.zeros((0, 1, 1), dtype=np.float32)


def hot_region(cam: np.ndarray, side: int) -> tuple[tuple[float, float], tuple[float, float, float, float]]:
    """The peak (x, y) and the box (x, y, w, h) of the hot region, in pixels of a ``side`` x ``side`` image."""
    import cv2

    full = cv2.resize(cam.astype(np.float32), (side, side), interpolation=cv2.INTER_LINEAR)
    y, x = np.unravel_index(int(np.argmax(full)), full.shape)
    hot = (full >= HOT_FRACTION * full[y, x]).astype(np.uint8)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(hot, connectivity=8)
    left, top, width, height, _ = stats[labels[y, x]]
    return (x + 0.5, y + 0.5), (float(left), float(top), float(width), float(height))


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
    """The heatmapper's body on a worker: its Grad-CAM model built once from the worker's Keras model."""
    cam_model = runtime.worker_cached("grad-cam", ref, lambda: grad_cam_model(runtime.worker_keras_model(ref)))
    for frame in batches:
        for start in range(0, len(frame), batch_size):
            part = frame.iloc[start : start + batch_size]
            images = runtime.decode_pngs(part["image"], ref.size)
            cams = grad_cam(cam_model, images, np.array([index[f] for f in part["finding"]]))
            yield pd.DataFrame(heatmap_rows(cams, part, ref.size), columns=HEATMAP_SCHEMA.fieldNames())
