"""Where the model looked against where the radiologists drew: heatmaps versus ``xray.boxes``.

For every (film, finding) that has both a heatmap of the model version and a hand-drawn box
(the NIH release has 984 boxes of 8 findings), in original-image pixels:

* **Pointing game** (Zhang et al., ECCV 2016): a hit when the heatmap's peak lies in the box,
  strictly, and with the usual tolerance of 15 px at a 224 px input (6.7% of the image
  side, :data:`TOLERANCE`), which a coarse feature map needs (one Grad-CAM cell of
  ``small_cnn`` at 128 px is 8 px).
* **IoBB and IoU accuracy** at T = 0.1 ... 0.7, the measures of ChestX-ray8 (Wang et al.,
  CVPR 2017): the share of boxes whose predicted box (around the heatmap's hot region)
  covers it with intersection over the predicted box's area (IoBB), or over the union
  (IoU), of at least T.
* **Controls**: ``shuffled``, the tolerant pointing game with each box paired with the
  heatmap of another film (a random permutation over all heatmaps), and ``chance``, the
  share of the image a box covers once widened by the tolerance: what a peak placed at
  random would hit. A model that looks at the lesion scores far above both; a pipeline that
  mixes up films or coordinates scores at them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
TOLERANCE = 15 / 224


def _inside(px: np.ndarray, py: np.ndarray, b: pd.DataFrame, margin: np.ndarray) -> np.ndarray:
    x, y, w, h = (b[k].to_numpy(dtype=float) for k in ("x", "y", "w", "h"))
    return (px >= x - margin) & (px <= x + w + margin) & (py >= y - margin) & (py <= y + h + margin)


def _overlaps(m: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """IoBB and IoU of each predicted box against its ground-truth box."""
    ax0, ay0 = m["box_x"].to_numpy(float), m["box_y"].to_numpy(float)
    ax1, ay1 = ax0 + m["box_w"].to_numpy(float), ay0 + m["box_h"].to_numpy(float)
    bx0, by0 = m["x"].to_numpy(float), m["y"].to_numpy(float)
    bx1, by1 = bx0 + m["w"].to_numpy(float), by0 + m["h"].to_numpy(float)
    inter = np.clip(np.minimum(ax1, bx1) - np.maximum(ax0, bx0), 0, None) * np.clip(
        np.minimum(ay1, by1) - np.maximum(ay0, by0), 0, None
    )
    predicted = (ax1 - ax0) * (ay1 - ay0)
    truth = (bx1 - bx0) * (by1 - by0)
    iobb = inter / np.where(predicted > 0, predicted, 1)
    iou = inter / np.where(predicted + truth - inter > 0, predicted + truth - inter, 1)
    return iobb, iou


def _chance(m: pd.DataFrame, margin: np.ndarray) -> np.ndarray:
    width, height = m["original_width"].to_numpy(float), m["original_height"].to_numpy(float)
    x0 = np.clip(m["x"].to_numpy(float) - margin, 0, width)
    x1 = np.clip(m["x"].to_numpy(float) + m["w"].to_numpy(float) + margin, 0, width)
    y0 = np.clip(m["y"].to_numpy(float) - margin, 0, height)
    y1 = np.clip(m["y"].to_numpy(float) + m["h"].to_numpy(float) + margin, 0, height)
    return (x1 - x0) * (y1 - y0) / (width * height)


def localization_metrics(maps: pd.DataFrame, boxes: pd.DataFrame, *, seed: int = 0) -> dict[str, Any]:
    """Per finding and over all: the measures above, for the (image, finding) pairs in both frames.

    ``maps``: image_id, finding, peak_x, peak_y, box_x, box_y, box_w, box_h, original_width,
    original_height. ``boxes``: image_id, finding, x, y, w, h (original pixels).
    """
    m = maps.merge(boxes, on=["image_id", "finding"], how="inner").reset_index(drop=True)
    if m.empty:
        return {"boxes_with_heatmap": 0, "by_finding": {}, "overall": {}}
    margin = TOLERANCE * np.maximum(m["original_width"].to_numpy(float), m["original_height"].to_numpy(float))
    px, py = m["peak_x"].to_numpy(float), m["peak_y"].to_numpy(float)
    m["hit"] = _inside(px, py, m, np.zeros(len(m)))
    m["hit_tolerant"] = _inside(px, py, m, margin)
    perm = np.random.default_rng(seed).permutation(len(m))
    if len(m) > 1:  # no box may keep its own film's heatmap
        perm = np.where(perm == np.arange(len(m)), np.roll(perm, 1), perm)
    m["shuffled"] = _inside(px[perm], py[perm], m, margin)
    m["chance"] = _chance(m, margin)
    m["iobb"], m["iou"] = _overlaps(m)
    by_finding = {name: _summary(group) for name, group in m.groupby("finding", sort=True)}
    return {"boxes_with_heatmap": len(m), "by_finding": by_finding, "overall": _summary(m)}


def _summary(g: pd.DataFrame) -> dict[str, Any]:
    return {
        "boxes": len(g),
        "pointing": float(g["hit"].mean()),
        "pointing_tolerant": float(g["hit_tolerant"].mean()),
        "shuffled": float(g["shuffled"].mean()),
        "chance": float(g["chance"].mean()),
        "iobb_accuracy": {f"{t:.1f}": float((g["iobb"] >= t).mean()) for t in THRESHOLDS},
        "iou_accuracy": {f"{t:.1f}": float((g["iou"] >= t).mean()) for t in THRESHOLDS},
    }
