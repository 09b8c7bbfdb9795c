"""Model folders and the ``xray.models`` registry: which model files may be loaded, and proof they are the ones trained.

Loading a model must never run code from a file. Keras models can carry Python: a
``Lambda`` layer's function is stored as marshalled bytecode, and loading an HDF5
(``.h5``) file or a SavedModel runs it; pickles run anything. So:

* only the native ``.keras`` format is loaded, with Keras's ``safe_mode`` (which refuses a
  Lambda layer); ``.h5``, SavedModel folders and pickles are refused with the reason;
* training records the SHA-256 of ``model.json`` and of the model file in ``xray.models``;
  scoring and evaluation refuse a folder whose files no longer match (a tampered or
  swapped file), or whose version is not registered in the lake;
* a model trained elsewhere enters a lake only through :func:`register_model`
  (``python jobs/register_model.py --model DIR``), which checks the format, loads it in
  safe mode, checks its shapes against its model.json, copies the folder under
  ``lake/models/<version>`` and records the hashes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import os
import shutil
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from xray_spark import tables
from xray_spark.errors import ModelRefused, UsageError
from xray_spark.lake import Lake

log = logging.getLogger(__name__)

MODEL_SUFFIX = ".keras"
CHAMPION = tables.CHAMPION
META_FILE = "model.json"
#: A ``.keras`` file is a zip archive.
ZIP_MAGIC = b"PK\x03\x04"

_REFUSED_FORMATS = {
    ".h5": "HDF5",
    ".hdf5": "HDF5",
    ".pb": "SavedModel",
    ".pkl": "pickle",
    ".pickle": "pickle",
    ".joblib": "pickle",
}


@dataclasses.dataclass(frozen=True)
class ModelCard:
    """A model folder as scoring and evaluation use it: what its checked model.json says, and its file.

    ``thresholds`` holds each label's operating threshold on the calibrated probability: None
    for a finding that is "not calibrated" (too few validation positives: never called), 0.5
    for a model.json older than thresholds. ``calibration`` holds Platt's (a, b) per label
    (none: the raw score is the probability). ``meta`` keeps the whole of model.json.
    """

    path: str
    version: str
    labels: list[str]
    size: int
    thresholds: dict[str, float | None]
    model_file: str
    model_sha256: str
    meta: dict[str, Any]
    calibration: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_model_format(model_file: str) -> None:
    """Refuse, with the reason, any model file that is not a native ``.keras`` archive."""
    name = os.path.basename(model_file.rstrip("/"))
    suffix = os.path.splitext(name)[1].lower()
    if os.path.isdir(model_file) or suffix in _REFUSED_FORMATS:
        kind = "SavedModel folder" if os.path.isdir(model_file) else f"{_REFUSED_FORMATS[suffix]} file"
        raise ModelRefused(
            f"model file {model_file} is a {kind}: loading one can run Python stored in it (a Lambda layer's "
            f"bytecode, a pickle), so only native {MODEL_SUFFIX} files are loaded, in Keras safe mode; "
            f"re-save the model as {MODEL_SUFFIX} where it was trained"
        )
    if suffix != MODEL_SUFFIX:
        raise ModelRefused(f"model file {model_file} is not a {MODEL_SUFFIX} file: only native Keras files are loaded")
    with open(model_file, "rb") as fh:
        if fh.read(4) != ZIP_MAGIC:
            raise ModelRefused(f"model file {model_file} cannot be loaded: it is not a {MODEL_SUFFIX} (zip) archive")
    check_model_archive(model_file)


#: What a ``.keras`` archive holds (Keras 2/3 native format); anything else is refused unopened.
KERAS_MEMBERS = frozenset({"metadata.json", "config.json", "model.weights.h5", "model.weights.npz"})
#: The most a model archive may unpack to (Keras extracts it into a temporary folder on every load).
MAX_MODEL_BYTES = 2 << 30


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
    """The model for inference, loaded in Keras safe mode after the format check; never runs stored code."""
    from xray_spark.models import keras

    check_model_format(model_file)
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


def load_checked(folder: ModelCard) -> Any:
    """The folder's model, loaded safely, whose input and outputs are what its model.json says."""
    model = load_model_safely(folder.model_file)
    if tuple(model.input_shape[1:]) != (folder.size, folder.size, 1) or model.output_shape[-1] != len(folder.labels):
        raise UsageError(
            f"model file {folder.model_file} takes {model.input_shape[1:]} and gives {model.output_shape[-1]} "
            f"outputs; its {META_FILE} says ({folder.size}, {folder.size}, 1) and {len(folder.labels)} labels"
        )
    return model


def read_model_folder(path: str) -> ModelCard:
    """model.json and the model file of a folder, checked for shape and presence (not yet for hashes)."""
    meta_path = os.path.join(path, META_FILE)
    if not os.path.isfile(meta_path):
        raise UsageError(f"model folder {path} has no {META_FILE}: pass a folder written by jobs/train.py")
    try:
        with open(meta_path, encoding="utf-8") as fh:
            meta = json.load(fh)
        model_file = os.path.join(path, str(meta["model_file"]))
        labels = [str(x) for x in meta["labels"]]
        size = int(meta["input"]["size"])
        version = str(meta["version"])
        given = meta.get("thresholds") or {}
        thresholds = {label: _threshold(given, label) for label in labels}
        fitted = meta.get("calibration") or {}
        calibration = {k: (float(v["a"]), float(v["b"])) for k, v in fitted.items() if k in labels and v}
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"model description {meta_path} is unreadable ({exc}): retrain or restore the file") from None
    if not version or "/" in version or version.startswith("."):
        raise UsageError(f"model description {meta_path} gives an unusable version {version!r}")
    check_labels(labels, meta_path)
    if os.path.dirname(os.path.normpath(model_file)) != os.path.normpath(path):
        raise ModelRefused(
            f"model description {meta_path} names a model file outside its folder: {meta['model_file']!r}"
        )
    if not os.path.exists(model_file):
        raise UsageError(f"model file {model_file} is missing: retrain, or restore it from a backup")
    check_model_format(model_file)
    return ModelCard(path, version, labels, size, thresholds, model_file, file_sha256(model_file), meta, calibration)


def check_labels(labels: list[str], meta_path: str) -> None:
    """A model's labels name the findings its outputs are, in order: at least one, each a known finding, once."""
    from xray_spark.labels import FINDINGS

    unknown = [label for label in labels if label not in FINDINGS]
    if not labels or unknown or len(set(labels)) != len(labels):
        what = f"unknown findings {unknown}" if unknown else "no labels" if not labels else "a label twice"
        raise UsageError(
            f"model description {meta_path} gives {what}: its labels must be distinct findings of "
            f"{', '.join(FINDINGS)}, one per output, in the outputs' order"
        )


def _threshold(given: dict[str, Any], label: str) -> float | None:
    """A label's threshold from model.json: None when it is given as null (not calibrated), 0.5 when absent."""
    if label not in given:
        return 0.5
    return None if given[label] is None else float(given[label])


def registered_row(spark: SparkSession, lake: Lake, version: str) -> dict[str, Any] | None:
    models = tables.read_table(spark, lake, "models")
    if models is None:
        return None
    row = models.where(F.col("version") == version).orderBy(F.desc("created")).first()
    return row.asDict() if row is not None else None


def verify_registered(spark: SparkSession, lake: Lake, folder: ModelCard) -> None:
    """The folder's model.json and model file are byte for byte those recorded in ``xray.models``."""
    row = registered_row(spark, lake, folder.version)
    how = f"register it with: python jobs/register_model.py --lake {lake.root} --model {folder.path}"
    if row is None:
        raise ModelRefused(
            f"model {folder.version} ({folder.path}) is not registered in xray.models of this lake: {how}"
        )
    if not row.get("model_sha256") or not row.get("meta_sha256"):
        raise ModelRefused(f"model {folder.version} was registered without SHA-256 digests (an older lake): {how}")
    meta_sha = file_sha256(os.path.join(folder.path, META_FILE))
    for what, recorded, found in (
        (os.path.basename(folder.model_file), row["model_sha256"], folder.model_sha256),
        (META_FILE, row["meta_sha256"], meta_sha),
    ):
        if recorded != found:
            raise ModelRefused(
                f"{what} of model {folder.version} in {folder.path} does not match the SHA-256 recorded in "
                f"xray.models at training ({found[:12]}... vs {recorded[:12]}...): the file was changed; "
                "restore it, or retrain"
            )


def alias_holder(spark: SparkSession, lake: Lake, alias: str = CHAMPION) -> dict[str, Any] | None:
    """The newest ``xray.model_aliases`` row of ``alias`` (who holds it, since when, why), or None."""
    aliases = tables.read_table(spark, lake, "model_aliases")
    if aliases is None:
        return None
    row = aliases.where(F.col("alias") == alias).orderBy(F.desc("set_at")).first()
    return row.asDict() if row is not None else None


def set_alias(spark: SparkSession, lake: Lake, version: str, *, alias: str = CHAMPION, reason: str = "") -> dict:
    """Give ``alias`` to a registered, intact model version (a row appended to ``xray.model_aliases``)."""
    import getpass

    from xray_spark.schema import MODEL_ALIASES_SCHEMA

    if not alias or not alias.replace("-", "").replace("_", "").isalnum():
        raise UsageError(f"alias {alias!r}: use letters, digits, '-' and '_'")
    if registered_row(spark, lake, version) is None:
        raise UsageError(f"model version {version!r} is not registered in xray.models of this lake")
    verify_registered(spark, lake, read_model_folder(lake.path("models", version)))
    row = {
        "alias": alias,
        "version": version,
        "set_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "set_by": getpass.getuser(),
        "reason": reason or None,
    }
    tables.write_table(spark.createDataFrame([row], MODEL_ALIASES_SCHEMA), lake, "model_aliases", mode="append")
    tables.register_tables(spark, lake)  # the views follow the champion
    return row


def default_version(spark: SparkSession, lake: Lake) -> str:
    """The champion's version; without a champion, the newest registered model (and a warning)."""
    champion = alias_holder(spark, lake)
    if champion is not None:
        log.info(
            "model: the champion, %s (promoted by %s at %s)",
            champion["version"],
            champion["set_by"],
            champion["set_at"],
        )
        return str(champion["version"])
    models = tables.read_table(spark, lake, "models")
    newest = models.orderBy(F.desc("created"), F.desc("version")).first() if models is not None else None
    if newest is None:
        raise UsageError(f"no model in {lake.path('tables', 'models')}: train one with jobs/train.py first")
    log.warning(
        "model: no champion in this lake, so the newest model, %s; promote one with jobs/promote.py --model-version V",
        newest["version"],
    )
    return str(newest["version"])


def resolve_model(spark: SparkSession, lake: Lake, *, version: str | None = None, path: str | None = None) -> ModelCard:
    """The verified folder for ``--model PATH``, ``--model-version V`` or the default (:func:`default_version`)."""
    if path is None:
        path = lake.path("models", version or default_version(spark, lake))
    folder = read_model_folder(path)
    verify_registered(spark, lake, folder)
    return folder


def digests(model_dir: str, model_file: str) -> dict[str, str]:
    """The ``xray.models`` digest columns for a model folder."""
    return {"model_sha256": file_sha256(model_file), "meta_sha256": file_sha256(os.path.join(model_dir, META_FILE))}


def register_model(spark: SparkSession, lake: Lake, source: str, *, dataset: str) -> dict[str, Any]:
    """Check a model folder trained elsewhere, copy it into ``lake/models/<version>`` and record it."""
    from xray_spark.schema import MODELS_SCHEMA

    folder = read_model_folder(os.path.abspath(source))
    if registered_row(spark, lake, folder.version) is not None:
        raise UsageError(
            f"model version {folder.version} is already registered in this lake: give the copy a new version"
        )
    load_checked(folder)
    target = lake.path("models", folder.version)
    if os.path.normpath(target) != os.path.normpath(folder.path):
        if os.path.exists(target):
            raise UsageError(f"{target} exists already: remove it or give the model another version")
        shutil.copytree(folder.path, target)
    meta = folder.meta
    row = {
        "version": folder.version,
        "created": str(meta.get("created") or dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")),
        "path": target,
        "model": str(meta.get("model") or "external"),
        "dataset": str(meta.get("dataset") or dataset),
        "labels": folder.labels,
        "image_size": folder.size,
        "val_auroc_mean": float(meta["val_auroc_mean"]) if meta.get("val_auroc_mean") is not None else None,
        "best_epoch": int(meta.get("best_epoch") or 0),
        "num_workers": int(meta.get("training", {}).get("num_workers", 1) or 1),
        **digests(target, os.path.join(target, os.path.basename(folder.model_file))),
    }
    tables.write_table(spark.createDataFrame([row], MODELS_SCHEMA), lake, "models", mode="append")
    return row
