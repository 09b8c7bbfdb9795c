"""The model on the executors: opened once per Python worker, fed the store's PNG bytes, answering probabilities.

A scoring UDF is built from a :class:`ModelRef` (the file, its SHA-256 as the driver
verified it, the input size, the number of outputs, its format) and, optionally, a *model
loader*, as Spark's own ``predict_batch_udf`` takes ``make_predict_fn``: a function of the
reference that returns ``predict(pixels) -> probabilities``, where ``pixels`` is a
``(n, size, size, 1)`` uint8 batch and the answer an ``(n, labels)`` float array. By
default it is the runtime of the file's format (:mod:`xray_spark.model_runtime`), opened
once per Python worker (Spark reuses its Python workers across tasks), on the task's GPU
if it was given one, after the file's digest is checked again there. Heatmaps ask the
same runtime to explain (:func:`worker_runtime`).

What a worker keeps is :data:`xray_spark.model_runtime.WORKER_MODELS`, a bounded cache.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import functions as F
from pyspark.sql import types as T

from xray_spark.model_card import ModelCard, file_sha256
from xray_spark.model_runtime import WORKER_MODELS, ModelFormat, ModelRuntime, format_of

#: A model's batch prediction: ``(n, size, size, 1)`` uint8 in, ``(n, labels)`` probabilities out.
PredictFn = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class ModelRef:
    """What an executor needs to open the model the driver verified (small: it travels with every task)."""

    model_file: str
    sha256: str
    size: int
    n_labels: int
    fmt: ModelFormat

    @classmethod
    def of(cls, card: ModelCard) -> ModelRef:
        return cls(card.model_file, card.model_sha256, card.size, len(card.labels), format_of(card.model_file))


def worker_cached(kind: str, ref: ModelRef, build: Callable[[], Any]) -> Any:
    """``build()``'s result, made once per Python worker for each kind and model file (while the cache keeps it)."""
    return WORKER_MODELS.get((kind, ref.model_file, ref.sha256), build)


def _checked_on_worker(ref: ModelRef) -> None:
    """The file is the one the driver verified; the task's GPU, if it has one, is the one the model will use."""
    if file_sha256(ref.model_file) != ref.sha256:
        raise ValueError(f"model file {ref.model_file} changed after the driver verified it: refusing to load it")
    from pyspark import TaskContext

    ctx = TaskContext.get()
    gpus = ctx.resources().get("gpu") if ctx is not None else None
    if gpus is not None and gpus.addresses and "tensorflow" not in sys.modules:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpus.addresses)


def worker_runtime(ref: ModelRef) -> ModelRuntime:
    """The model opened by its format's runtime, once per Python worker (scoring's and the heatmaps')."""

    def open_checked() -> ModelRuntime:
        _checked_on_worker(ref)
        return ref.fmt.open(ref.model_file)

    return worker_cached("runtime", ref, open_checked)


def decode_pngs(images: pd.Series, size: int) -> np.ndarray:
    """The batch's PNG bytes as one ``(n, size, size, 1)`` uint8 array; a clear error on a wrong image."""
    import cv2

    pixels = np.empty((len(images), size, size, 1), dtype=np.uint8)
    for i, data in enumerate(images):
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
        if image is None or image.shape != (size, size):
            received = "undecodable bytes" if image is None else f"shape {image.shape}"
            raise ValueError(f"expected a {size} x {size} gray PNG per row, received {received}")
        pixels[i, :, :, 0] = image
    return pixels


def predict_batches(
    ref: ModelRef,
    batch_size: int,
    make_predict_fn: Callable[[ModelRef], PredictFn] | None,
    batches: Iterator[pd.Series],
) -> Iterator[pd.Series]:
    """The UDF's body: each Arrow batch of PNG bytes decoded and predicted in model batches of ``batch_size``.

    A thread decodes the next Arrow batch while the model predicts this one (OpenCV and
    TensorFlow both release the GIL), so a GPU is not left waiting for the CPU's decoding.
    """
    from concurrent.futures import ThreadPoolExecutor

    if make_predict_fn is None:
        predict = worker_runtime(ref).predict
    else:
        kind = f"predict:{make_predict_fn.__module__}.{make_predict_fn.__qualname__}"
        predict = worker_cached(kind, ref, lambda: make_predict_fn(ref))

    def probabilities(pixels: np.ndarray) -> pd.Series:
        out = np.zeros((0, ref.n_labels), dtype=np.float32)
        if len(pixels):
            parts = [predict(pixels[start : start + batch_size]) for start in range(0, len(pixels), batch_size)]
            out = np.concatenate([np.asarray(p, dtype=np.float32) for p in parts])
        if out.shape[1] != ref.n_labels:
            raise ValueError(f"the model gave {out.shape[1]} outputs per image, expected {ref.n_labels}")
        return pd.Series(list(out))

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="png-decode") as pool:
        pending = None  # the batch being decoded while the one before it is predicted
        for images in batches:
            decoding = pool.submit(decode_pngs, images, ref.size)
            if pending is not None:
                yield probabilities(pending.result())
            pending = decoding
        if pending is not None:
            yield probabilities(pending.result())


def predict_png_udf(
    ref: ModelRef, batch_size: int, make_predict_fn: Callable[[ModelRef], PredictFn] | None = None
) -> Any:
    """A pandas UDF (iterator of Arrow batches): the store's PNG bytes in, ``ref.n_labels`` probabilities out.

    ``make_predict_fn`` is the model loader (default: the runtime of the file's format).
    Only compressed images cross from the JVM to Python and only probabilities come back.
    """
    loader = make_predict_fn

    @F.pandas_udf(T.ArrayType(T.FloatType()))
    def predict(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
        yield from predict_batches(ref, batch_size, loader, batches)

    return predict
