"""Configuration: ``conf/*.yaml`` plus ``--set key=value`` overrides, parsed once into frozen dataclasses.

A configuration file is a nested mapping whose keys mirror the dataclasses below
(``image.size``, ``labels.min_cases``, ``split.train`` ...). Keys the file leaves out keep
their defaults; a key that does not exist, or a value of the wrong type, is a
:class:`~xray_spark.errors.ConfigError` that names the key. Overrides use dotted keys and
YAML values: ``--set image.size=224 --set labels.findings=[Mass,Nodule]``.

Spark tuning beyond the few settings here belongs in ``spark-submit --conf`` or in
``spark.conf`` (a free mapping of Spark properties); one property can be overridden as
``--set spark.conf.spark.executor.memory=8g`` (everything after ``spark.conf.`` is its name).

``python -m xray_spark.config --conf FILE --get spark.master`` prints one resolved value
(the Makefile hands the conf's master to ``spark-submit`` this way).
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from xray_spark.config_checks import check_settings
from xray_spark.config_services import (
    DeliverSettings,
    DicomNodeSettings,
    SqlServerSettings,
    WebSettings,
    WorklistSettings,
)
from xray_spark.errors import ConfigError
from xray_spark.labels import FINDINGS


@dataclasses.dataclass(frozen=True)
class SparkSettings:
    master: str = "local[2]"
    app_name: str = "xray-spark"
    driver_memory: str = "4g"
    shuffle_partitions: int = 8
    log_level: str = "WARN"
    conf: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class ImageSettings:
    size: int = 128
    # Images whose header claims more pixels than this are quarantined before decoding.
    max_pixels: int = 100_000_000
    # frames x rows x columns x samples x bytes per sample a decoder may allocate (128 MiB).
    max_decoded_bytes: int = 134_217_728
    # Files larger than this are not read (64 MiB; an NIH PNG is under 1 MiB).
    max_file_bytes: int = 67_108_864
    # Images whose shorter side is below this are quarantined (a 1 x 1 "film" holds nothing).
    min_side: int = 64


@dataclasses.dataclass(frozen=True)
class LockSettings:
    # How long a run waits for another run holding its lock (0: refuse at once).
    wait_seconds: float = 0.0


@dataclasses.dataclass(frozen=True)
class SampleWeightSettings:
    base: float = 0.1
    per_finding: float = 1.0


@dataclasses.dataclass(frozen=True)
class LabelSettings:
    findings: list[str] = dataclasses.field(default_factory=lambda: list(FINDINGS))
    min_cases: int = 0
    sample_weight: SampleWeightSettings = dataclasses.field(default_factory=SampleWeightSettings)


@dataclasses.dataclass(frozen=True)
class SplitSettings:
    train: float = 0.7
    val: float = 0.1
    test: float = 0.2
    salt: str = "xray-spark"


@dataclasses.dataclass(frozen=True)
class QuarantineSettings:
    max_fraction: float = 0.05


@dataclasses.dataclass(frozen=True)
class PrepareSettings:
    images_per_file: int = 1000
    rowgroup_size_mb: int = 32


@dataclasses.dataclass(frozen=True)
class PrivacySettings:
    # Where the secret key of the patient pseudonyms (HMAC-SHA256) comes from: this
    # environment variable, else this file (kept outside the lake). Never the key itself.
    key_env: str = "XRAY_SPARK_PSEUDONYM_KEY"
    key_file: str = ""
    # Where each DICOM run writes the map from the lake's file references (source_path) to the
    # delivered files' paths: outside the lake, like the key (export folders name patients).
    identity_dir: str = ".xray-identity"


@dataclasses.dataclass(frozen=True)
class AugmentSettings:
    enabled: bool = True
    rotation: float = 0.02  # fraction of a full turn (0.02 = 7 degrees)
    shift: float = 0.04  # fraction of the image side
    zoom: float = 0.08


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    model: str = "small_cnn"
    epochs: int = 20
    batch_size: int = 32  # per worker
    learning_rate: float = 0.002
    loss: str = "weighted_bce"  # weighted_bce | bce | focal
    focal_gamma: float = 2.0
    use_sample_weights: bool = False
    init_weights: str = "none"  # none | imagenet | champion (fine-tune its weights) | PATH to a weights file
    verdicts: bool = False  # labels from readers' verdicts (xray.verdicts) too, by the two rules below
    verdicts_min_readers: int = 1  # readers' complete verdicts that label a film no labels CSV labels
    verdicts_min_readers_over_csv: int = 2  # readers, all agreeing, to replace a labels CSV's label (0: never)
    verdicts_flagged: str = "refuse"  # readers far from everyone else (kappa < 0.2): refuse | exclude | include
    num_workers: int = 1
    mixed_precision: bool = True  # on GPU only
    shuffle_buffer: int = 512
    dropout: float = 0.2
    early_stopping_patience: int = 6
    reduce_lr_patience: int = 3
    reduce_lr_factor: float = 0.5
    min_learning_rate: float = 0.00001
    eval_max_rows: int = 1000  # rows of train used for the per-epoch train AUROC (0 = all)
    seed: int = 0
    worker_timeout_s: int = 1800  # a collective that waits longer fails the stage
    augment: AugmentSettings = dataclasses.field(default_factory=AugmentSettings)


#: How urgent each finding is for the risk order (``score.urgency``, 0..1; see :mod:`xray_spark.risk`).
DEFAULT_URGENCY = {
    "Pneumothorax": 1.0,
    "Effusion": 0.8,
    "Mass": 0.8,
    "Pneumonia": 0.7,
    "Edema": 0.7,
    "Consolidation": 0.6,
    "Nodule": 0.6,
    "Cardiomegaly": 0.5,
    "Atelectasis": 0.5,
    "Infiltration": 0.5,
    "Emphysema": 0.4,
    "Fibrosis": 0.4,
    "Pleural_Thickening": 0.3,
    "Hernia": 0.3,
}


@dataclasses.dataclass(frozen=True)
class ScoreSettings:
    batch_size: int = 64
    heatmaps: str = "top:100"  # none | called | top:N (see xray_spark.score.heatmaps)
    # Each finding's weight in a film's risk score, applied when the film is scored (xray_spark.risk).
    urgency: dict[str, float] = dataclasses.field(default_factory=lambda: dict(DEFAULT_URGENCY))


@dataclasses.dataclass(frozen=True)
class EvaluateSettings:
    split: str = "test"
    bootstrap: int = 1000  # resamples of patients for the 95% confidence intervals
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class ThresholdSettings:
    """How each finding's operating point is chosen on the validation split (see ``xray_spark.operating``)."""

    rule: str = "prevalence"  # prevalence | youden | sensitivity:X | specificity:X | precision:X
    min_positives: int = 5  # fewer validation positives: the finding is "not calibrated", never called
    per_finding: dict[str, str] = dataclasses.field(default_factory=dict)  # e.g. {Pneumothorax: sensitivity:0.9}


@dataclasses.dataclass(frozen=True)
class PromotionSettings:
    """The rule a challenger must pass before it may replace the champion, written down before the test."""

    split: str = "test"  # the labelled films both models are measured on
    min_positives: int = 20  # a finding with fewer positives there is reported, not judged
    non_inferiority_margin: float = 0.02  # per judged finding: DeLong's lower bound of the difference above -margin
    mean_auroc_not_lower: bool = True  # the challenger's mean AUROC over the judged findings at least the champion's
    max_sensitivity_drop: float = 0.05  # per judged finding, at each model's own operating point
    level: float = 0.95  # of the intervals
    bootstrap: int = 1000  # patient resamples of the difference
    # Before the test: the chance an equal challenger is shown non-inferior; below it the films are too few and a
    # challenge that is not passed is INCONCLUSIVE, not FAIL (unless a finding is shown inferior).
    power: float = 0.8
    assumed_correlation: float = 0.5  # between the two models' AUROC estimates, for that calculation
    # Findings the champion calls that the challenger may leave uncalled (or not have); any other drop fails.
    may_drop: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class MonitorSettings:
    """Nightly monitoring of the champion's inputs and outputs against a reference (``jobs/monitor.py``)."""

    reference: str = "nights:7"  # nights:N (the champion's first N nights on the dataset) | validation
    alpha: float = 0.01  # family-wise per night, by Holm's step-down procedure over the night's measures
    min_films: int = 20  # a night with fewer films is recorded, not tested
    fail_on_alert: bool = False  # exit 5 (nightly and monitor) when a night raises an alert


@dataclasses.dataclass(frozen=True)
class Settings:
    lake: str = "./lake"
    dataset: str = "nih"
    spark: SparkSettings = dataclasses.field(default_factory=SparkSettings)
    image: ImageSettings = dataclasses.field(default_factory=ImageSettings)
    labels: LabelSettings = dataclasses.field(default_factory=LabelSettings)
    split: SplitSettings = dataclasses.field(default_factory=SplitSettings)
    quarantine: QuarantineSettings = dataclasses.field(default_factory=QuarantineSettings)
    prepare: PrepareSettings = dataclasses.field(default_factory=PrepareSettings)
    train: TrainSettings = dataclasses.field(default_factory=TrainSettings)
    score: ScoreSettings = dataclasses.field(default_factory=ScoreSettings)
    evaluate: EvaluateSettings = dataclasses.field(default_factory=EvaluateSettings)
    thresholds: ThresholdSettings = dataclasses.field(default_factory=ThresholdSettings)
    locks: LockSettings = dataclasses.field(default_factory=LockSettings)
    privacy: PrivacySettings = dataclasses.field(default_factory=PrivacySettings)
    sql_server: SqlServerSettings = dataclasses.field(default_factory=SqlServerSettings)
    dicom_node: DicomNodeSettings = dataclasses.field(default_factory=DicomNodeSettings)
    deliver: DeliverSettings = dataclasses.field(default_factory=DeliverSettings)
    worklist: WorklistSettings = dataclasses.field(default_factory=WorklistSettings)
    web: WebSettings = dataclasses.field(default_factory=WebSettings)
    promotion: PromotionSettings = dataclasses.field(default_factory=PromotionSettings)
    monitor: MonitorSettings = dataclasses.field(default_factory=MonitorSettings)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)


def load_settings(path: str | Path | None = None, overrides: Iterable[str] = ()) -> Settings:
    """Read ``path`` (YAML), apply ``key=value`` overrides in order, validate, freeze."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"configuration file {path} does not exist: pass an existing --conf FILE")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"configuration file {path} is not valid YAML: {exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"configuration file {path} must hold a mapping of keys, not {type(loaded).__name__}")
        raw = loaded
    for item in overrides:
        key, value = parse_override(item)
        _set_dotted(raw, key, value)
    settings = _build(Settings, raw, prefix="")
    check_settings(settings)
    return settings


def parse_override(item: str) -> tuple[str, Any]:
    """``"image.size=224"`` -> ``("image.size", 224)``; the value is read as YAML."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key=value, e.g. --set image.size=224")
    key, text = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    return key, value


SPARK_CONF_PREFIX = "spark.conf."


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    if key.startswith(SPARK_CONF_PREFIX) and len(key) > len(SPARK_CONF_PREFIX):
        # A Spark property's own name has dots: it is one key of the spark.conf mapping.
        spark = raw.setdefault("spark", {})
        if not isinstance(spark.get("conf"), dict):
            spark["conf"] = {}
        spark["conf"][key[len(SPARK_CONF_PREFIX) :]] = "" if value is None else str(value)
        return
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def train_settings_from_dict(raw: Mapping[str, Any]) -> TrainSettings:
    """``train.*`` back from its JSON form (``dataclasses.asdict``), as a training plan carries it."""
    return _build(TrainSettings, raw, "train.")


#: Keys that have moved, and where to: the old key is refused with the new one's name.
MOVED_KEYS = {
    "worklist.urgency": (
        "score.urgency",
        "the weights are applied when a film is scored, so they are a setting of score",
    ),
}


def _build(cls: type, raw: Mapping[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        full = prefix + str(key)
        moved = next((old for old in MOVED_KEYS if old == full or old.startswith(full + ".")), None)
        if key not in fields and moved:
            new, why = MOVED_KEYS[moved]
            raise ConfigError(f"configuration key {moved!r} is now {new!r}: {why}")
        if key not in fields:
            known = ", ".join(prefix + name for name in fields)
            raise ConfigError(f"unknown configuration key {prefix + str(key)!r} (known here: {known})")
    values: dict[str, Any] = {}
    for name in fields:
        if name not in raw:
            continue
        values[name] = _coerce(hints[name], raw[name], prefix + name)
    return cls(**values)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise ConfigError(f"configuration key {key!r} must be a mapping of sub-keys, got {value!r}")
        return _build(hint, value, prefix=key + ".")
    if origin in (types.UnionType, typing.Union):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        hint = next(option for option in options if option is not type(None))
        return _coerce(hint, value, key)
    if origin is list:
        (item_hint,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"configuration key {key!r} must be a list, got {value!r}")
        return [_coerce(item_hint, item, f"{key}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"configuration key {key!r} must be a mapping, got {value!r}")
        _, value_hint = typing.get_args(hint)
        return {str(k): _coerce(value_hint, v, f"{key}.{k}") for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"configuration key {key!r} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"configuration key {key!r} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"configuration key {key!r} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"configuration key {key!r} must be a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if isinstance(value, dict | list) or value is None:
            raise ConfigError(f"configuration key {key!r} must be a string, got {value!r}")
        return str(value)
    raise ConfigError(f"configuration key {key!r} has an unsupported type {hint!r}")  # pragma: no cover


def _get(settings: Settings, key: str) -> Any:
    node: Any = settings.to_dict()
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise ConfigError(f"unknown configuration key {key!r}")
        node = node[part]
    return node


if __name__ == "__main__":
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m xray_spark.config", description="print resolved configuration")
    parser.add_argument("--conf", help="configuration file (YAML)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--get", metavar="KEY", help="print one value (e.g. spark.master); default: all as JSON")
    args = parser.parse_args()
    try:
        resolved = load_settings(args.conf, args.overrides)
        value = _get(resolved, args.get) if args.get else resolved.to_dict()
    except ConfigError as exc:
        print(f"config: error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(value if isinstance(value, str | int | float) else json.dumps(value, indent=2, sort_keys=True))
