"""The model card: a model folder's ``model.json``, written and read here only.

A model folder holds the model file (:data:`MODEL_FILE`), ``model.json`` (this card) and
the training's plots. The card says what the model is (version, labels, input size, its
preprocessing), how it was trained, and how its outputs are read: per label, the
operating threshold on the calibrated probability and Platt's calibration. Training
writes it (:func:`write_card`); everything else reads it through :func:`read_card`, which
checks it, and :func:`load_checked`, which loads the model file safely and checks its
shapes against the card. The SHA-256 digests of both files (:func:`digests`) are what
``xray.models`` records and every load compares (:mod:`xray_spark.registry`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any

import numpy as np

from xray_spark.errors import ModelRefused, UsageError
from xray_spark.lake import write_json_atomic
from xray_spark.model_runtime import ModelRuntime, check_model_format, open_runtime
from xray_spark.models import MODEL_SUFFIX

META_FILE = "model.json"
#: The model file training writes beside the card.
MODEL_FILE = "model" + MODEL_SUFFIX
#: A label's threshold when the card gives none (a model.json older than operating points).
DEFAULT_THRESHOLD = 0.5
DEFAULT_THRESHOLD_RULE = f"{DEFAULT_THRESHOLD} (a model without operating points)"


@dataclasses.dataclass(frozen=True)
class ModelCard:
    """A model folder as scoring and evaluation use it: what its checked model.json says, and its file.

    ``thresholds`` holds each label's operating threshold on the calibrated probability: None
    for a finding that is "not calibrated" (too few validation positives: never called),
    :data:`DEFAULT_THRESHOLD` for a model.json older than thresholds. ``calibration`` holds
    Platt's (a, b) per label (none: the raw score is the probability). ``meta`` keeps the
    whole of model.json.
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

    @property
    def kind(self) -> str:
        """The architecture (a name of the model zoo), or ``external`` for a model trained elsewhere without one."""
        return str(self.meta.get("model") or "external")

    @property
    def dataset(self) -> str | None:
        """The dataset it was trained on, where the card says."""
        return None if self.meta.get("dataset") is None else str(self.meta["dataset"])

    @property
    def threshold_rule(self) -> str:
        """How the thresholds were chosen, in words (:func:`threshold_rule_text`), or the default's."""
        return str(self.meta.get("threshold_rule") or DEFAULT_THRESHOLD_RULE)


def threshold_rule_text(rule: str, min_positives: int) -> str:
    """The card's ``threshold_rule``: the rule and where it was applied."""
    return f"{rule} on the validation split (calibrated probabilities), at least {min_positives} positives"


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def digests(card: ModelCard) -> dict[str, str]:
    """The ``xray.models`` digest columns of a card's folder: its model file and its model.json."""
    return {"model_sha256": card.model_sha256, "meta_sha256": file_sha256(os.path.join(card.path, META_FILE))}


def write_card(model_dir: str, meta: dict[str, Any]) -> None:
    """model.json into ``model_dir``, whole or not at all."""
    write_json_atomic(os.path.join(model_dir, META_FILE), meta)


def read_card(path: str) -> ModelCard:
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


def load_checked(card: ModelCard) -> ModelRuntime:
    """The card's model, opened by its format's runtime, whose input and outputs are what its model.json says, whose
    validation record is a number, and whose outputs on probe films (black, grey, white, a gradient) are finite."""
    model = open_runtime(card.model_file)
    if not isinstance(model, ModelRuntime):
        raise ModelRefused(f"the runtime opening {card.model_file} lacks input_shape, n_outputs or predict")
    if tuple(model.input_shape) != (card.size, card.size, 1) or model.n_outputs != len(card.labels):
        raise UsageError(
            f"model file {card.model_file} takes {tuple(model.input_shape)} and gives {model.n_outputs} "
            f"outputs; its {META_FILE} says ({card.size}, {card.size}, 1) and {len(card.labels)} labels"
        )
    check_validation_record(card.meta, card.path)
    ramp = np.linspace(0, 255, card.size, dtype=np.float32).astype(np.uint8)
    probes = np.stack(
        [np.full((card.size, card.size), v, np.uint8) for v in (0, 128, 255)]
        + [np.add.outer(ramp // 2, ramp // 2).astype(np.uint8)]
    )[..., None]
    out = np.asarray(model.predict(probes), dtype=np.float64)
    check_finite_outputs(out, f"model file {card.model_file}", "on probe films (black, grey, white, a gradient)")
    return model


def check_finite_outputs(outputs: np.ndarray, what: str, where: str) -> None:
    """Refuse a model some of whose outputs are NaN or infinite: such an output is never a probability."""
    bad = ~np.isfinite(np.asarray(outputs, dtype=np.float64))
    if bad.any():
        rows = int(bad.any(axis=-1).sum()) if bad.ndim > 1 else int(bad.sum())
        raise ModelRefused(
            f"{what} gives NaN or infinite outputs {where} ({rows} of {len(bad)} films): a broken model "
            "(diverged training, poisoned labels or damaged weights) is never registered; retrain it"
        )


def check_validation_record(meta: dict[str, Any], where: str) -> None:
    """Refuse a card whose validation mean AUROC is recorded as NaN or not a number (a model that learned nothing
    measurable, or whose validation outputs were broken); a card with no validation record at all passes."""
    value = meta.get("val_auroc_mean")
    if value is None:
        return
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not np.isfinite(number):
        raise ModelRefused(
            f"model {meta.get('version')} ({where}) records a validation mean AUROC of {value!r}: its validation "
            "outputs were broken or no finding could be measured; it is not registered"
        )


#: How a card records the patients its model was trained on: a digest per patient, never the number itself.
PATIENT_DIGEST = "sha256(dataset|patient_id), first 16 hex digits"


def patient_digest(dataset: str, patient_id: object) -> str:
    """One patient of one dataset as a card records it (:data:`PATIENT_DIGEST`)."""
    return hashlib.sha256(f"{dataset}|{patient_id}".encode()).hexdigest()[:16]


def training_patients(card: ModelCard) -> set[str] | None:
    """The digests of the patients the card's model was trained on; None when the card records none."""
    record = card.meta.get("training_patients")
    if not isinstance(record, dict) or record.get("digest") != PATIENT_DIGEST:
        return None
    return {str(x) for x in record.get("patients", [])}


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
    """A label's threshold from model.json: None when it is given as null (not calibrated), the default when absent."""
    if label not in given:
        return DEFAULT_THRESHOLD
    return None if given[label] is None else float(given[label])
