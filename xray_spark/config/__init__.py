"""Configuration: ``conf/*.yaml`` plus ``--set key=value`` overrides, parsed once into frozen dataclasses.

A configuration file is a nested mapping whose keys mirror the dataclasses below
(``image.size``, ``labels.min_cases``, ``split.train`` ...). Keys the file leaves out keep
their defaults; a key that does not exist, or a value of the wrong type, is a
:class:`~xray_spark.errors.ConfigError` that names the key. Overrides use dotted keys and
YAML values: ``--set image.size=224 --set labels.findings=[Mass,Nodule]``.

Spark tuning beyond the few settings here belongs in ``spark-submit --conf`` or in
``spark.conf`` (a free mapping of Spark properties); one property can be overridden as
``--set spark.conf.spark.executor.memory=8g`` (everything after ``spark.conf.`` is its name).

``python -m xray_spark.config --config FILE --get spark.master`` prints one resolved value
(the Makefile hands the conf's master to ``spark-submit`` this way).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from xray_spark.config import places
from xray_spark.config.rules import check_across
from xray_spark.config.schema import check_field, setting
from xray_spark.config.sections import (
    DEFAULT_URGENCY,
    AugmentSettings,
    EvaluateSettings,
    ImageSettings,
    LabelSettings,
    LockSettings,
    MonitorSettings,
    PrepareSettings,
    PrivacySettings,
    PromotionSettings,
    QuarantineSettings,
    SampleWeightSettings,
    ScoreSettings,
    SparkSettings,
    SplitSettings,
    ThresholdSettings,
    TrainSettings,
)
from xray_spark.config.services import (
    AuditSettings,
    DeliverSettings,
    DicomNodeSettings,
    DicomWebSourceSettings,
    PriorsSettings,
    SqlServerSettings,
    WebSettings,
    WorklistSettings,
)
from xray_spark.errors import ConfigError

__all__ = [
    "DEFAULT_URGENCY",
    "AuditSettings",
    "AugmentSettings",
    "DeliverSettings",
    "DicomNodeSettings",
    "DicomWebSourceSettings",
    "EvaluateSettings",
    "ImageSettings",
    "LabelSettings",
    "LockSettings",
    "MonitorSettings",
    "PrepareSettings",
    "PriorsSettings",
    "PrivacySettings",
    "PromotionSettings",
    "QuarantineSettings",
    "SampleWeightSettings",
    "ScoreSettings",
    "Settings",
    "SparkSettings",
    "SplitSettings",
    "SqlServerSettings",
    "ThresholdSettings",
    "TrainSettings",
    "WebSettings",
    "WorklistSettings",
    "load_settings",
    "parse_override",
    "train_settings_from_dict",
]


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every setting of xray-spark: the sections below, each key declared with its type, default, bounds and comment."""

    lake: str = setting("lake", "the lake: a local folder, or a Hadoop file system URL", path=True)
    dataset: str = setting("nih", "the store the jobs work on (lake/petastorm/<dataset>)")
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
    dicomweb_source: DicomWebSourceSettings = dataclasses.field(default_factory=DicomWebSourceSettings)
    priors: PriorsSettings = dataclasses.field(default_factory=PriorsSettings)
    audit: AuditSettings = dataclasses.field(default_factory=AuditSettings)
    deliver: DeliverSettings = dataclasses.field(default_factory=DeliverSettings)
    worklist: WorklistSettings = dataclasses.field(default_factory=WorklistSettings)
    web: WebSettings = dataclasses.field(default_factory=WebSettings)
    promotion: PromotionSettings = dataclasses.field(default_factory=PromotionSettings)
    monitor: MonitorSettings = dataclasses.field(default_factory=MonitorSettings)

    def check(self) -> None:
        name = self.dataset
        if not name or not name.replace("-", "").replace("_", "").isalnum() or not name[0].isalnum():
            raise ConfigError(
                "configuration key 'dataset' must be a simple name (letters, digits, - and _, "
                f"starting with a letter or digit), got {self.dataset!r}"
            )
        check_across(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)


def load_settings(path: str | Path | None = None, overrides: Iterable[str] = ()) -> Settings:
    """Read ``path`` (YAML), apply ``key=value`` overrides in order, validate, freeze.

    Every path setting comes out absolute (:mod:`xray_spark.config.places`): relative to the file's
    folder when the file gives it, to the working directory when an override does, and under the
    product's home when neither does."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"configuration file {path} does not exist: pass an existing --config FILE")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"configuration file {path} is not valid YAML: {exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"configuration file {path} must hold a mapping of keys, not {type(loaded).__name__}")
        raw = loaded
        _file_paths(raw, path.absolute().parent)
    for item in overrides:
        key, value = parse_override(item)
        if key in PATH_KEYS and isinstance(value, str):
            value = places.absolute(value, None)
        _set_dotted(raw, key, value)
    return _defaults_at_home(_build(Settings, raw, prefix=""))


def _path_keys(cls: type, prefix: str = "") -> tuple[str, ...]:
    """The dotted keys declared ``setting(..., path=True)``."""
    keys: list[str] = []
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[field.name]):
            keys += _path_keys(hints[field.name], f"{prefix}{field.name}.")
        elif field.metadata.get("path"):
            keys.append(prefix + field.name)
    return tuple(keys)


def _file_paths(raw: dict[str, Any], folder: Path) -> None:
    """The file's relative paths made relative to its folder (in ``raw``, before they are parsed)."""
    for key in PATH_KEYS:
        node: Any = raw
        *parents, last = key.split(".")
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(last), str):
            node[last] = places.absolute(node[last], folder)


def _defaults_at_home(settings: Settings) -> Settings:
    """The path settings still relative (their defaults) placed under :func:`places.home`."""
    changes: dict[str, str] = {}
    for key in PATH_KEYS:
        value = _get(settings, key)
        if value and not places.is_url(value) and not os.path.isabs(value):
            changes[key] = places.absolute(value, places.home())
    return _replace_dotted(settings, changes) if changes else settings


def _replace_dotted(node: Any, changes: Mapping[str, Any]) -> Any:
    here = {k: v for k, v in changes.items() if "." not in k}
    below: dict[str, dict[str, Any]] = {}
    for key, value in changes.items():
        if "." in key:
            head, rest = key.split(".", 1)
            below.setdefault(head, {})[rest] = value
    for head, sub in below.items():
        here[head] = _replace_dotted(getattr(node, head), sub)
    return dataclasses.replace(node, **here)


#: The settings that are files or folders (made absolute when loaded).
PATH_KEYS = _path_keys(Settings)


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
    for name, field in fields.items():
        if name not in raw:
            continue
        values[name] = _coerce(hints[name], raw[name], prefix + name)
        check_field(prefix + name, values[name], field.metadata)
    built = cls(**values)
    check = getattr(built, "check", None)
    if check is not None:  # the rules joining this section's keys, beside its fields
        check()
    return built


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
