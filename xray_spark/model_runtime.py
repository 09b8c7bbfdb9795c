"""A trained model as the product uses it: the runtime protocol, the file formats that may be opened, a bounded cache.

Everything after training sees a model through :class:`ModelRuntime`: registration
checks its input and outputs and its answers on probe films, scoring calls
:meth:`~ModelRuntime.predict`, and heatmaps call :meth:`~ExplainingRuntime.explain` where
the runtime has it (Grad-CAM for Keras). Nothing outside a runtime's own module touches
the toolkit that made the model.

A model file's format is its suffix, looked up in :data:`FORMATS`: each
:class:`ModelFormat` has the check that runs before anything is loaded (a format whose
loading can run stored code is never one of them, :func:`check_model_format`) and the
function that opens the file as a runtime. Another toolkit (ONNX Runtime, say) is one
module with a runtime class and one :func:`register_format` call.

A Python worker keeps what it opened in :data:`WORKER_MODELS`, at most
:data:`MAX_WORKER_MODELS` models, least recently used first out (as pyspark's
``ml/model_cache.py``): a challenge scores two models and draws heatmaps from each, and a
long-lived worker must not keep every model it ever met.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Protocol, runtime_checkable

import numpy as np

from xray_spark.errors import ModelRefused
from xray_spark.models import MODEL_SUFFIX, check_keras_file


@runtime_checkable
class ModelRuntime(Protocol):
    """An opened model: ``(n, size, size, 1)`` uint8 films in, ``(n, n_outputs)`` probabilities out."""

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one film the model takes: ``(size, size, 1)``."""
        ...

    @property
    def n_outputs(self) -> int:
        """How many probabilities it gives per film (one per label of its card)."""
        ...

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        """Probabilities for a batch of films."""
        ...


@runtime_checkable
class ExplainingRuntime(ModelRuntime, Protocol):
    """A runtime that can also say where it looked: one heatmap per film, for the finding asked."""

    def explain(self, pixels: np.ndarray, findings: np.ndarray) -> np.ndarray:
        """Heatmaps in [0, 1], ``(n, h, w)``, for the films ``pixels`` and each film's finding index in ``findings``."""
        ...


@dataclasses.dataclass(frozen=True)
class ModelFormat:
    """A model file format: its suffix, the check run before any load, how a file of it is opened, and whether
    its runtime explains (draws heatmaps), which the driver asks without opening the model."""

    suffix: str
    description: str
    check: Callable[[str], None]
    open: Callable[[str], ModelRuntime]
    explains: bool = False


#: The formats that may be opened, by suffix (:func:`register_format`).
FORMATS: dict[str, ModelFormat] = {}

#: Formats never opened, with what they are: opening one can run Python stored in the file.
REFUSED_FORMATS = {
    ".h5": "HDF5",
    ".hdf5": "HDF5",
    ".pb": "SavedModel",
    ".pkl": "pickle",
    ".pickle": "pickle",
    ".joblib": "pickle",
}


def register_format(fmt: ModelFormat) -> None:
    if fmt.suffix in REFUSED_FORMATS:
        raise ValueError(f"{fmt.suffix} ({REFUSED_FORMATS[fmt.suffix]}) files are never opened")
    FORMATS[fmt.suffix] = fmt


def model_format(model_file: str) -> str:
    """The model file's format: its suffix, lower case."""
    return os.path.splitext(os.path.basename(model_file.rstrip("/")))[1].lower()


def format_of(model_file: str) -> ModelFormat:
    """The file's :class:`ModelFormat`, after its check; a refusal, with the reason, for any other file."""
    suffix = model_format(model_file)
    known = ", ".join(f"{f.suffix} ({f.description})" for f in FORMATS.values())
    if os.path.isdir(model_file) or suffix in REFUSED_FORMATS:
        kind = "SavedModel folder" if os.path.isdir(model_file) else f"{REFUSED_FORMATS[suffix]} file"
        raise ModelRefused(
            f"model file {model_file} is a {kind}: loading one can run Python stored in it (a Lambda layer's "
            f"bytecode, a pickle), so only these formats are opened: {known}; re-save the model in one of them "
            "where it was trained"
        )
    if suffix not in FORMATS:
        raise ModelRefused(f"model file {model_file} is not of a format this product opens: {known}")
    fmt = FORMATS[suffix]
    fmt.check(model_file)
    return fmt


def check_model_format(model_file: str) -> None:
    """Refuse, with the reason, any model file that is not of a format in :data:`FORMATS`, or fails its check."""
    format_of(model_file)


def open_runtime(model_file: str) -> ModelRuntime:
    """The file opened by its format's runtime (after the format's check)."""
    return format_of(model_file).open(model_file)


def can_explain(runtime: ModelRuntime) -> bool:
    return callable(getattr(runtime, "explain", None))


def _open_keras(model_file: str) -> ModelRuntime:
    from xray_spark.keras_runtime import KerasRuntime  # TensorFlow is imported only when a Keras model is opened

    return KerasRuntime.open(model_file)


#: The format of the models this product trains.
KERAS_FORMAT = ModelFormat(
    MODEL_SUFFIX, "a native Keras archive, opened in safe mode", check_keras_file, _open_keras, True
)


register_format(KERAS_FORMAT)  # the product's own format; another toolkit's module registers its own


def _check_onnx(model_file: str) -> None:
    from xray_spark.onnx.runtime import check_onnx_file  # onnx is imported only when an ONNX model is checked

    check_onnx_file(model_file)


def _open_onnx(model_file: str) -> ModelRuntime:
    from xray_spark.onnx.runtime import OnnxRuntime

    return OnnxRuntime.open(model_file)


#: Models from other toolkits: an ONNX graph of standard operators, read through the ``onnx`` section of its card.
ONNX_FORMAT = ModelFormat(
    ".onnx", "an ONNX graph of standard operators, with its card", _check_onnx, _open_onnx, explains=True
)

register_format(ONNX_FORMAT)


#: Models one Python worker keeps open at most: a champion and a challenger.
MAX_WORKER_MODELS = 2


class ModelCache:
    """A least-recently-used cache of opened models (or what is built from them), at most ``max_size`` entries."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.opened = 0  # how many times a build ran (a cache that reopens every batch shows here)

    def get(self, key: Hashable, build: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            value = build()
            self.opened += 1
            self._items[key] = value
            while len(self._items) > self.max_size:
                self._items.popitem(last=False)
                gc.collect()  # a Keras model's graph is freed by the collector, not by the last reference
            return value

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


#: What this Python worker has opened. Spark reuses Python workers across tasks, so it outlives a task.
WORKER_MODELS = ModelCache(MAX_WORKER_MODELS)
