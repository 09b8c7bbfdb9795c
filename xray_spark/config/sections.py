"""The pipeline's settings sections: each key's type, default, bounds and comment in one place (:func:`setting`).

A rule that joins keys of one section is the section's ``check()``, beside its fields.
The services' sections are :mod:`xray_spark.config.services`.
"""

from __future__ import annotations

import dataclasses
import re

from xray_spark.config.schema import setting
from xray_spark.errors import ConfigError
from xray_spark.labels import FINDINGS
from xray_spark.models import MODELS

#: A JVM memory size as Spark takes it: a positive whole number with an optional unit.
MEMORY_SIZE = re.compile(r"^[1-9][0-9]*[kmgtp]?b?$", re.IGNORECASE)
#: ``spark.conf`` keys whose values are whole numbers of at least 1 (a count of partitions, cores, executors).
SPARK_COUNTS = (
    "spark.sql.shuffle.partitions",
    "spark.default.parallelism",
    "spark.executor.cores",
    "spark.executor.instances",
    "spark.cores.max",
    "spark.task.cpus",
    "spark.sql.files.maxPartitionNum",
)
#: ``spark.conf`` keys whose values are memory sizes.
SPARK_SIZES = (
    "spark.driver.memory",
    "spark.executor.memory",
    "spark.executor.memoryOverhead",
    "spark.driver.maxResultSize",
)


def known_findings(key: str, names: list[str] | dict[str, object]) -> None:
    """Refuse findings a key names that are not among the 14."""
    unknown = sorted(set(names) - set(FINDINGS))
    if unknown:
        raise ConfigError(f"configuration key {key!r} names unknown findings {unknown}; known: {', '.join(FINDINGS)}")


@dataclasses.dataclass(frozen=True)
class SparkSettings:
    """The Spark session every job starts (more tuning: ``spark.conf`` or ``spark-submit --conf``)."""

    master: str = setting("local[2]", "the Spark master: local[N], spark://HOST:PORT, yarn ...")
    app_name: str = setting("xray-spark", "the application's name in Spark's UI and logs")
    driver_memory: str = setting("4g", "the driver JVM's heap: 4g, 512m ...")
    shuffle_partitions: int = setting(8, "spark.sql.shuffle.partitions", ge=1)
    log_level: str = setting("WARN", "Spark's own log level")
    class_archive: bool = setting(
        True, "map Spark's classes from a per-machine archive in the product's cache: a job's JVM starts faster"
    )
    conf: dict[str, str] = setting(factory=dict, doc="any other Spark properties, by their own names")

    def check(self) -> None:
        """The values a typo would make Spark fail on (with a JVM traceback), refused before it starts."""
        if not MEMORY_SIZE.match(self.driver_memory.strip()):
            raise ConfigError(
                f"configuration key 'spark.driver_memory' must be a positive memory size such as 4g or 512m, "
                f"got {self.driver_memory!r}"
            )
        for key, value in self.conf.items():
            if key in SPARK_COUNTS and not (value.strip().isdigit() and int(value) >= 1):
                raise ConfigError(
                    f"configuration key 'spark.conf.{key}' must be a whole number of at least 1, got {value!r}"
                )
            maybe_zero = key == "spark.driver.maxResultSize" and value.strip() == "0"
            if key in SPARK_SIZES and not (MEMORY_SIZE.match(value.strip()) or maybe_zero):
                raise ConfigError(
                    f"configuration key 'spark.conf.{key}' must be a positive memory size such as 4g or 512m, "
                    f"got {value!r}"
                )


@dataclasses.dataclass(frozen=True)
class ImageSettings:
    """The stored images, and the limits on what a decoder may be handed."""

    size: int = setting(128, "the stored square's side, px (the model's input)", ge=8, le=4096)
    max_pixels: int = setting(100_000_000, "images whose header claims more pixels are quarantined undecoded", gt=0)
    max_decoded_bytes: int = setting(
        134_217_728, "frames x rows x columns x samples x bytes a decoder may allocate (128 MiB)", gt=0
    )
    max_file_bytes: int = setting(67_108_864, "larger files are not read (64 MiB; an NIH PNG is under 1 MiB)", gt=0)
    min_side: int = setting(64, "images whose shorter side is below this are quarantined", gt=0)


@dataclasses.dataclass(frozen=True)
class LockSettings:
    wait_seconds: float = setting(0.0, "how long a run waits for another holding its lock (0: refuse at once)", ge=0)


@dataclasses.dataclass(frozen=True)
class SampleWeightSettings:
    base: float = setting(0.1, "every film's weight")
    per_finding: float = setting(1.0, "added per finding the film has")


@dataclasses.dataclass(frozen=True)
class LabelSettings:
    findings: list[str] = setting(factory=lambda: list(FINDINGS), doc="the label set, among the 14 findings")
    min_cases: int = setting(0, "findings with fewer positive films are left out of the label set", ge=0)
    sample_weight: SampleWeightSettings = setting(factory=SampleWeightSettings)

    def check(self) -> None:
        known_findings("labels.findings", self.findings)
        if not self.findings:
            raise ConfigError("configuration key 'labels.findings' must name at least one finding")
        if len(set(self.findings)) != len(self.findings):
            raise ConfigError("configuration key 'labels.findings' lists a finding twice")


@dataclasses.dataclass(frozen=True)
class SplitSettings:
    """Each patient's split, by a salted hash of the patient: the three shares add up to 1."""

    train: float = setting(0.7, "share of patients in train", ge=0, le=1)
    val: float = setting(0.1, "share of patients in val (thresholds and calibration are fitted there)", ge=0, le=1)
    test: float = setting(0.2, "share of patients in test", ge=0, le=1)
    salt: str = setting("xray-spark", "the hash's salt: another salt, another split")

    def check(self) -> None:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ConfigError(
                f"split.train + split.val + split.test must be 1, got {total:g} "
                f"({self.train:g} + {self.val:g} + {self.test:g})"
            )


@dataclasses.dataclass(frozen=True)
class QuarantineSettings:
    max_fraction: float = setting(
        0.05, "a run with a larger share of bad inputs fails (after recording them)", ge=0, le=1
    )


@dataclasses.dataclass(frozen=True)
class PrepareSettings:
    images_per_file: int = setting(1000, "films per Parquet file of the store", gt=0)
    rowgroup_size_mb: int = setting(32, "Parquet row group size, MiB", gt=0)


@dataclasses.dataclass(frozen=True)
class PrivacySettings:
    """Where identity lives: never in the lake."""

    key_env: str = setting("XRAY_SPARK_PSEUDONYM_KEY", "the environment variable holding the pseudonym key")
    key_file: str = setting("", "else a file holding it (outside the lake); never the key itself", path=True)
    identity_dir: str = setting(
        "identity", "where each DICOM run writes the map from file references to files: outside the lake", path=True
    )


@dataclasses.dataclass(frozen=True)
class AugmentSettings:
    enabled: bool = setting(True, "training-only augmentation layers")
    rotation: float = setting(0.02, "fraction of a full turn (0.02 = 7 degrees)", ge=0, le=0.5)
    shift: float = setting(0.04, "fraction of the image side", ge=0, le=0.5)
    zoom: float = setting(0.08, "fraction of the image side", ge=0, le=0.9)


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    model: str = setting("small_cnn", "the architecture", choices=MODELS)
    epochs: int = setting(20, "at most this many epochs (early stopping may end sooner)", ge=1)
    batch_size: int = setting(32, "films per step, per worker", ge=1)
    learning_rate: float = setting(0.002, "Adam's learning rate", gt=0)
    loss: str = setting("weighted_bce", "the loss", choices=("weighted_bce", "bce", "focal"))
    focal_gamma: float = setting(2.0, "the focal loss's gamma", ge=0)
    use_sample_weights: bool = setting(False, "weigh films by labels.sample_weight")
    init_weights: str = setting("none", "none | imagenet | champion (fine-tune its weights) | PATH to a weights file")
    verdicts: bool = setting(False, "labels from readers' verdicts (xray.verdicts) too, by the two rules below")
    verdicts_min_readers: int = setting(1, "readers' complete verdicts that label a film no labels CSV labels", ge=1)
    verdicts_min_readers_over_csv: int = setting(
        2, "readers, all agreeing, to replace a labels CSV's label (0: never)", ge=0
    )
    verdicts_flagged: str = setting(
        "refuse", "readers far from everyone else (kappa < 0.2)", choices=("refuse", "exclude", "include")
    )
    num_workers: int = setting(1, "training processes (Spark barrier tasks)", ge=1)
    mixed_precision: bool = setting(True, "float16 compute, on GPU only")
    shuffle_buffer: int = setting(512, "films in the shuffle buffer", ge=1)
    dropout: float = setting(0.2, "before the last layer", ge=0, lt=1)
    early_stopping_patience: int = setting(6, "epochs without a better validation AUROC before stopping", ge=1)
    reduce_lr_patience: int = setting(3, "epochs without improvement before the learning rate drops", ge=1)
    reduce_lr_factor: float = setting(0.5, "how much it drops", gt=0, lt=1)
    min_learning_rate: float = setting(0.00001, "it never drops below this", gt=0)
    eval_max_rows: int = setting(1000, "rows of train for the per-epoch train AUROC (0 = all)", ge=0)
    seed: int = setting(0, "the random seed")
    worker_timeout_s: int = setting(1800, "a collective that waits longer fails the stage", ge=1)
    augment: AugmentSettings = setting(factory=AugmentSettings)


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
    batch_size: int = setting(64, "films per model batch", ge=1, le=4096)
    heatmaps: str = setting("top:100", "none | called | top:N (see xray_spark.score.heatmaps)")
    urgency: dict[str, float] = setting(
        factory=lambda: dict(DEFAULT_URGENCY),
        doc="each finding's weight in a film's risk score, applied when the film is scored (xray_spark.risk)",
    )

    def check(self) -> None:
        from xray_spark.heatmap_choice import parse_heatmap_choice

        try:
            parse_heatmap_choice(self.heatmaps)
        except ValueError as exc:
            raise ConfigError(f"configuration key 'score.heatmaps': {exc}") from None
        known_findings("score.urgency", self.urgency)
        bad = {k: v for k, v in self.urgency.items() if not 0.0 <= v <= 1.0}
        if bad:
            raise ConfigError(f"configuration key 'score.urgency' must give each finding a weight in [0, 1], got {bad}")


@dataclasses.dataclass(frozen=True)
class EvaluateSettings:
    split: str = setting("test", "the split evaluated")
    bootstrap: int = setting(1000, "resamples of patients for the 95% confidence intervals", ge=0)
    seed: int = setting(0, "the bootstrap's seed")


@dataclasses.dataclass(frozen=True)
class ThresholdSettings:
    """How each finding's operating point is chosen on the validation split (see ``xray_spark.operating``)."""

    rule: str = setting("prevalence", "prevalence | youden | sensitivity:X | specificity:X | precision:X")
    min_positives: int = setting(5, "fewer validation positives: the finding is not calibrated, never called", ge=1)
    per_finding: dict[str, str] = setting(factory=dict, doc="a rule per finding, e.g. {Pneumothorax: sensitivity:0.9}")

    def check(self) -> None:
        from xray_spark.operating import parse_rule

        for key, rule in [("thresholds.rule", self.rule)] + [
            (f"thresholds.per_finding.{k}", v) for k, v in self.per_finding.items()
        ]:
            try:
                parse_rule(rule)
            except ValueError as exc:
                raise ConfigError(f"configuration key {key!r}: {exc}") from None
        known_findings("thresholds.per_finding", self.per_finding)


@dataclasses.dataclass(frozen=True)
class PromotionSettings:
    """The rule a challenger must pass before it may replace the champion, written down before the test."""

    split: str = setting("test", "the labelled films both models are measured on")
    min_positives: int = setting(20, "a finding with fewer positives there is reported, not judged", ge=0)
    non_inferiority_margin: float = setting(
        0.02, "per judged finding: DeLong's lower bound of the difference above -margin", gt=0, lt=1
    )
    mean_auroc_not_lower: bool = setting(
        True, "the challenger's mean AUROC over the judged findings at least the champion's"
    )
    max_sensitivity_drop: float = setting(0.05, "per judged finding, at each model's own operating point", ge=0, le=1)
    level: float = setting(0.95, "of the intervals", gt=0, lt=1)
    bootstrap: int = setting(1000, "patient resamples of the difference", ge=0)
    power: float = setting(
        0.8,
        "before the test: the chance an equal challenger is shown non-inferior; below it a challenge not passed "
        "is INCONCLUSIVE, not FAIL (unless a finding is shown inferior)",
        gt=0,
        lt=1,
    )
    assumed_correlation: float = setting(
        0.5, "between the two models' AUROC estimates, for the power calculation", ge=0, lt=1
    )
    may_drop: list[str] = setting(
        factory=list, doc="findings the champion calls that the challenger may leave uncalled; any other drop fails"
    )

    def check(self) -> None:
        known_findings("promotion.may_drop", self.may_drop)


@dataclasses.dataclass(frozen=True)
class MonitorSettings:
    """Nightly monitoring of the champion's inputs and outputs against a reference (``jobs/monitor.py``)."""

    reference: str = setting("nights:7", "nights:N (the champion's first N nights on the dataset) | validation")
    alpha: float = setting(0.01, "family-wise per night, by Holm's step-down procedure", gt=0, lt=1)
    min_films: int = setting(20, "a night with fewer films is recorded, not tested", ge=1)
    fail_on_alert: bool = setting(False, "exit 5 (nightly and monitor) when a night raises an alert")

    def check(self) -> None:
        parse_reference(self.reference)


def parse_reference(text: str) -> tuple[str, int]:
    """``monitor.reference``: ``nights:N`` (N >= 1) -> ("nights", N), ``validation`` -> ("validation", 0)."""
    kind, _, n = str(text).strip().partition(":")
    if kind == "validation" and not n:
        return "validation", 0
    if kind == "nights" and n.isdigit() and int(n) >= 1:
        return "nights", int(n)
    raise ConfigError(
        f"configuration key 'monitor.reference' must be nights:N (N >= 1, e.g. nights:7) or validation, got {text!r}"
    )
