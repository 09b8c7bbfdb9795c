"""The model on the executors: loaded once per Python worker, fed the store's PNG bytes, answering probabilities.

A scoring UDF is built from a :class:`ModelRef` (the file, its SHA-256 as the driver
verified it, the input size, the number of outputs) and a *model loader*, as Spark's own
``predict_batch_udf`` takes ``make_predict_fn``: a function of the reference that loads
the model and returns ``predict(pixels) -> probabilities``, where ``pixels`` is a
``(n, size, size, 1)`` uint8 batch and the answer an ``(n, labels)`` float array. The
loader runs once per Python worker (Spark reuses its Python workers across tasks), on the
task's GPU if it was given one, after the file's digest is checked again there.

:data:`LOADERS` picks the loader by the model file's format (:data:`xray_spark.models.MODEL_FORMATS`):
another runtime (ONNX Runtime, say) is one loader here and one format entry there.
Grad-CAM needs the Keras model itself (gradients): :func:`worker_keras_model`.

Everything a worker keeps lives in :data:`_WORKER` of this module. The UDF's closure
calls this module's functions by name, so they are pickled by reference and their state
is the worker's module state, which outlives a task.
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
from xray_spark.models import MODEL_SUFFIX, load_model_safely, model_format

#: A model's batch prediction: ``(n, size, size, 1)`` uint8 in, ``(n, labels)`` probabilities out.
PredictFn = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class ModelRef:
    """What an executor needs to load the model the driver verified (small: it travels with every task)."""

    model_file: str
    sha256: str
    size: int
    n_labels: int

    @classmethod
    def of(cls, card: ModelCard) -> ModelRef:
        return cls(card.model_file, card.model_sha256, card.size, len(card.labels))


#: What this Python worker has loaded or built, by (kind, model file).
_WORKER: dict[tuple[str, str], Any] = {}


def worker_cached(kind: str, ref: ModelRef, build: Callable[[], Any]) -> Any:
    """``build()``'s result, made once per Python worker for each kind and model file."""
    key = (kind, ref.model_file)
    if key not in _WORKER:
        _WORKER[key] = build()
    return _WORKER[key]


def _checked_on_worker(ref: ModelRef) -> None:
    """The file is the one the driver verified; the task's GPU, if it has one, is the one the model will use."""
    if file_sha256(ref.model_file) != ref.sha256:
        raise ValueError(f"model file {ref.model_file} changed after the driver verified it: refusing to load it")
    from pyspark import TaskContext

    ctx = TaskContext.get()
    gpus = ctx.resources().get("gpu") if ctx is not None else None
    if gpus is not None and gpus.addresses and "tensorflow" not in sys.modules:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpus.addresses)


def worker_keras_model(ref: ModelRef) -> Any:
    """The Keras model for this Python worker, loaded in safe mode (scoring's and Grad-CAM's)."""

    def load() -> Any:
        _checked_on_worker(ref)
        return load_model_safely(ref.model_file)

    return worker_cached("keras", ref, load)


def keras_predictor(ref: ModelRef) -> PredictFn:
    """The Keras model's inference pass as one TensorFlow graph (``tf.function``).

    Calling the Keras model eagerly runs its layers op by op from Python, which is much
    slower than one graph for the same batches (``bench/results/``, the score runs). The
    signature takes any batch length, so the last, shorter batch is not traced again.
    """
    # The model first: it picks the task's GPU before TensorFlow starts and imports
    # TensorFlow without its start-up notices (xray_spark.tf_quiet).
    model = worker_keras_model(ref)
    from xray_spark.tf_quiet import import_tensorflow

    tf = import_tensorflow()
    signature = [tf.TensorSpec([None, ref.size, ref.size, 1], tf.uint8)]
    forward = tf.function(lambda pixels: model(pixels, training=False), input_signature=signature)
    return lambda pixels: np.asarray(forward(pixels), dtype=np.float32)


#: The model loader for each model file format.
LOADERS: dict[str, Callable[[ModelRef], PredictFn]] = {MODEL_SUFFIX: keras_predictor}


def loader_for(ref: ModelRef) -> Callable[[ModelRef], PredictFn]:
    found = LOADERS.get(model_format(ref.model_file))
    if found is None:
        raise ValueError(f"no model runtime loads {ref.model_file}: known formats are {', '.join(LOADERS)}")
    return found


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
    ref: ModelRef, batch_size: int, make_predict_fn: Callable[[ModelRef], PredictFn], batches: Iterator[pd.Series]
) -> Iterator[pd.Series]:
    """The UDF's body: each Arrow batch of PNG bytes decoded and predicted in model batches of ``batch_size``.

    A thread decodes the next Arrow batch while the model predicts this one (OpenCV and
    TensorFlow both release the GIL), so a GPU is not left waiting for the CPU's decoding.
    """
    from concurrent.futures import ThreadPoolExecutor

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

    ``make_predict_fn`` is the model loader (default: the one of the file's format, :data:`LOADERS`).
    Only compressed images cross from the JVM to Python and only probabilities come back.
    """
    loader = make_predict_fn or loader_for(ref)

    @F.pandas_udf(T.ArrayType(T.FloatType()))
    def predict(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
        yield from predict_batches(ref, batch_size, loader, batches)

    return predict
