"""Losses that weigh a rare finding's positives up, as Keras losses and in numpy for validation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def class_weights(positives: np.ndarray, total: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-finding (positive, negative) weights from the train split's label frequencies.

    As in Wang et al. (2017), positives of a rare finding weigh more; here each class of a
    finding carries half the total weight: w_pos = N / (2 P), w_neg = N / (2 (N - P)).
    """
    positives = np.asarray(positives, dtype=np.float64)
    p = np.clip(positives, 1.0, None)
    n = np.clip(total - positives, 1.0, None)
    return (total / (2.0 * p)).astype(np.float32), (total / (2.0 * n)).astype(np.float32)


def make_loss(kind: str, pos_weight: np.ndarray, neg_weight: np.ndarray, gamma: float = 2.0) -> Callable:
    """A loss returning one value per example (so Keras applies sample weights to it)."""
    from xray_spark.tf_quiet import import_tensorflow

    tf = import_tensorflow()

    pos = tf.constant(pos_weight, tf.float32)
    neg = tf.constant(neg_weight, tf.float32)
    eps = 1e-7

    def loss(y_true: Any, y_pred: Any) -> Any:
        y_true = tf.cast(y_true, tf.float32)
        p = tf.clip_by_value(tf.cast(y_pred, tf.float32), eps, 1.0 - eps)
        if kind == "bce":
            per = -(y_true * tf.math.log(p) + (1.0 - y_true) * tf.math.log(1.0 - p))
        elif kind == "weighted_bce":
            per = -(pos * y_true * tf.math.log(p) + neg * (1.0 - y_true) * tf.math.log(1.0 - p))
        elif kind == "focal":
            pt = y_true * p + (1.0 - y_true) * (1.0 - p)
            per = -tf.pow(1.0 - pt, gamma) * tf.math.log(pt)
        else:  # pragma: no cover - settings are checked when loaded
            raise ValueError(kind)
        return tf.reduce_mean(per, axis=-1)

    loss.__name__ = f"{kind}_loss"
    return loss


def numpy_loss(kind: str, y: np.ndarray, p: np.ndarray, pos_w: np.ndarray, neg_w: np.ndarray, gamma: float) -> float:
    """The same loss in numpy, for the validation set's predictions."""
    p = np.clip(p.astype(np.float64), 1e-7, 1 - 1e-7)
    if kind == "bce":
        per = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    elif kind == "weighted_bce":
        per = -(pos_w * y * np.log(p) + neg_w * (1 - y) * np.log(1 - p))
    else:
        pt = y * p + (1 - y) * (1 - p)
        per = -((1 - pt) ** gamma) * np.log(pt)
    return float(per.mean()) if per.size else float("nan")
