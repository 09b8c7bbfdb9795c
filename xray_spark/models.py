"""The CNN zoo (small_cnn, densenet121, mobilenet_v2), with the preprocessing inside the model, and which model
files may be loaded.

Every model takes raw uint8 grayscale images ``(size, size, 1)`` and returns one sigmoid
probability per finding. The preprocessing (scaling, channel handling, ImageNet
normalisation for the ImageNet backbones) and the training-only augmentation are layers
of the model, so the saved model carries them: scoring feeds the same raw pixels and can
never apply a different preprocessing than training did.

TensorFlow is imported inside the functions: prepare and most tests never load it.

Loading a model must never run code from a file. Keras models can carry Python: a
``Lambda`` layer's function is stored as marshalled bytecode, and loading an HDF5
(``.h5``) file or a SavedModel runs it; pickles run anything. Keras opens only the
native ``.keras`` archive, checked by its zip directory first (:func:`check_keras_file`),
in Keras's ``safe_mode``, which refuses a Lambda layer; ``.h5``, SavedModel folders and
pickles are refused with the reason (:mod:`xray_spark.model_runtime`, where every format
that may be opened is registered).
"""

from __future__ import annotations

import os
from typing import Any

from xray_spark.errors import ModelRefused, UsageError

MODELS = ("small_cnn", "densenet121", "mobilenet_v2")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def keras() -> Any:
    """tf_keras (Keras 2): the Keras that supports MultiWorkerMirroredStrategy.

    ``TF_USE_LEGACY_KERAS`` is set once, when the package is imported (``xray_spark/__init__.py``).
    TensorFlow's native start-up notices are kept off the console (:mod:`xray_spark.tf_quiet`).
    """
    from xray_spark.tf_quiet import import_tensorflow

    import_tensorflow()
    import tf_keras

    return tf_keras


def preprocessing_spec(kind: str, image_size: int) -> dict[str, Any]:
    """What the model's own first layers do to its input (recorded in model.json)."""
    if kind == "small_cnn":
        return {"input": f"uint8 grayscale {image_size}x{image_size}x1", "scale": "x / 127.5 - 1", "channels": 1}
    return {
        "input": f"uint8 grayscale {image_size}x{image_size}x1",
        "scale": "x / 255, repeated to 3 channels, minus ImageNet mean, over ImageNet std",
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "channels": 3,
    }


def _augmentation(k: Any, augment: dict[str, Any], seed: int) -> list[Any]:
    if not augment.get("enabled", True):
        return []
    layers = []
    if augment.get("rotation", 0) > 0:
        layers.append(k.layers.RandomRotation(augment["rotation"], fill_mode="constant", seed=seed))
    if augment.get("shift", 0) > 0:
        layers.append(
            k.layers.RandomTranslation(augment["shift"], augment["shift"], fill_mode="constant", seed=seed + 1)
        )
    if augment.get("zoom", 0) > 0:
        layers.append(k.layers.RandomZoom(augment["zoom"], fill_mode="constant", seed=seed + 2))
    return layers


def _conv_bn_relu(k: Any, x: Any, filters: int, size: int = 3, strides: int = 1) -> Any:
    x = k.layers.Conv2D(filters, size, strides=strides, padding="same", use_bias=False)(x)
    # A short BatchNormalization memory: the running statistics used for scoring catch up
    # within an epoch even on small stores.
    x = k.layers.BatchNormalization(momentum=0.9)(x)
    return k.layers.Activation("relu")(x)


def _small_cnn_body(k: Any, x: Any) -> Any:
    """A strided 5x5 stem and three conv blocks (~150 M multiply-adds at 128 px): fast on a CPU.

    Average and max pooling side by side: the max keeps small bright lesions (a nodule)
    that an average over the whole film would dilute.
    """
    x = _conv_bn_relu(k, x, 24, size=5, strides=2)
    x = _conv_bn_relu(k, x, 32)
    x = k.layers.MaxPooling2D(2)(x)
    for filters in (64, 128):
        x = _conv_bn_relu(k, x, filters)
        x = _conv_bn_relu(k, x, filters)
        x = k.layers.MaxPooling2D(2)(x)
    return k.layers.Concatenate(name="pooled")([k.layers.GlobalAveragePooling2D()(x), k.layers.GlobalMaxPooling2D()(x)])


def build_model(
    kind: str,
    n_labels: int,
    image_size: int,
    *,
    init_weights: str = "none",
    augment: dict[str, Any] | None = None,
    seed: int = 0,
    dropout: float = 0.2,
) -> Any:
    """A compiled-free tf_keras model: uint8 image in, ``n_labels`` sigmoid probabilities out."""
    if kind not in MODELS:
        raise ValueError(f"unknown model {kind!r}; choose one of {', '.join(MODELS)}")
    k = keras()
    inputs = k.Input(shape=(image_size, image_size, 1), dtype="uint8", name="image")
    x = k.layers.Rescaling(1.0, name="to_float")(inputs)
    for layer in _augmentation(k, augment or {}, seed):
        x = layer(x)
    if kind == "small_cnn":
        x = k.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale")(x)
        features = _small_cnn_body(k, x)
    else:
        x = k.layers.Rescaling(1.0 / 255.0, name="scale")(x)
        x = k.layers.Concatenate(name="gray_to_rgb")([x, x, x])
        x = k.layers.Normalization(
            mean=list(IMAGENET_MEAN), variance=[s * s for s in IMAGENET_STD], name="imagenet_norm"
        )(x)
        weights = "imagenet" if init_weights == "imagenet" else None
        app = k.applications.DenseNet121 if kind == "densenet121" else k.applications.MobileNetV2
        try:
            backbone = app(include_top=False, weights=weights, input_shape=(image_size, image_size, 3))
        except Exception as exc:  # the download of ImageNet weights fails offline
            raise UsageError(
                f"could not load ImageNet weights for {kind} ({type(exc).__name__}: {exc}); "
                "use --init-weights none, or --init-weights PATH to a local weights file"
            ) from None
        features = k.layers.GlobalAveragePooling2D(name="gap")(backbone(x))
    if dropout > 0:
        features = k.layers.Dropout(dropout, seed=seed)(features)
    logits = k.layers.Dense(n_labels, name="logits")(features)
    outputs = k.layers.Activation("sigmoid", dtype="float32", name="probabilities")(logits)
    model = k.Model(inputs, outputs, name=kind)
    if init_weights not in ("none", "imagenet", ""):
        try:
            model.load_weights(init_weights)
        except Exception as exc:
            raise UsageError(f"could not load weights from {init_weights}: {exc}") from None
    return model


# -- which model files may be loaded ------------------------------------------------------------------------------

#: The native Keras format, the one this product trains and saves.
MODEL_SUFFIX = ".keras"
#: A ``.keras`` file is a zip archive.
ZIP_MAGIC = b"PK\x03\x04"
#: What a ``.keras`` archive holds (Keras 2/3 native format); anything else is refused unopened.
KERAS_MEMBERS = frozenset({"metadata.json", "config.json", "model.weights.h5", "model.weights.npz"})
#: The most a model archive may unpack to (Keras extracts it into a temporary folder on every load).
MAX_MODEL_BYTES = 2 << 30


def check_keras_file(model_file: str) -> None:
    """A ``.keras`` file: a zip archive whose directory holds only what Keras writes (:func:`check_model_archive`)."""
    with open(model_file, "rb") as fh:
        if fh.read(4) != ZIP_MAGIC:
            raise ModelRefused(f"model file {model_file} cannot be loaded: it is not a {MODEL_SUFFIX} (zip) archive")
    check_model_archive(model_file)


def check_model_archive(model_file: str) -> None:
    """Refuse a ``.keras`` archive by its directory, before Keras extracts it: unknown or unsafe names,
    too many entries, or more than :data:`MAX_MODEL_BYTES` unpacked (a 4 MB zip can hold 3 GiB of zeros)."""
    import zipfile

    try:
        with zipfile.ZipFile(model_file) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelRefused(f"model file {model_file} is not a readable zip archive ({type(exc).__name__})") from None
    unknown = sorted(
        e.filename for e in entries if e.filename not in KERAS_MEMBERS and not e.filename.startswith("assets/")
    )
    unsafe = [e.filename for e in entries if e.filename.startswith("/") or ".." in e.filename.split("/")]
    if unknown or unsafe or len(entries) > 64:
        shown = ", ".join((unsafe or unknown)[:3]) or f"{len(entries)} entries"
        raise ModelRefused(
            f"model file {model_file} holds what a {MODEL_SUFFIX} archive does not ({shown}): refused unopened"
        )
    total = sum(e.file_size for e in entries)
    if total > MAX_MODEL_BYTES:
        raise ModelRefused(
            f"model file {model_file} unpacks to {total:,} bytes, over the {MAX_MODEL_BYTES:,} a model may: "
            "refused before anything is extracted (a zip bomb, or a model far larger than this product trains)"
        )


def load_model_safely(model_file: str) -> Any:
    """The Keras model, loaded in Keras safe mode after the format check; never runs stored code."""
    if os.path.isdir(model_file) or not model_file.lower().endswith(MODEL_SUFFIX):
        raise ModelRefused(
            f"model file {model_file} is not a {MODEL_SUFFIX} file: Keras opens only its native archive, in safe mode"
        )
    check_keras_file(model_file)
    k = keras()
    try:
        return k.models.load_model(model_file, compile=False, safe_mode=True)
    except Exception as exc:
        text = str(exc)
        if "safe_mode" in text or "Lambda" in text:
            raise ModelRefused(
                f"model file {model_file} holds a Lambda layer, i.e. Python code that would run when it is "
                "loaded: refused (Keras safe mode). Rebuild the model without Lambda layers"
            ) from None
        raise ModelRefused(
            f"model file {model_file} cannot be loaded ({type(exc).__name__}): retrain or restore it"
        ) from None
