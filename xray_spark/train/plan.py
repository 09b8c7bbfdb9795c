"""What a training run is: the plan every worker follows, and each worker's place among the others.

A :class:`TrainPlan` is picklable and JSON-able: it travels to the Spark barrier tasks and
is saved as ``checkpoints/plan.json``, from which ``--resume`` continues a run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from typing import Any

from xray_spark.config import ThresholdSettings, TrainSettings, train_settings_from_dict
from xray_spark.models import build_model

CHECKPOINT_DIR = "checkpoints"


@dataclasses.dataclass(frozen=True)
class TrainPlan:
    """Everything a worker needs to train: the store, the labels, where the model goes, the settings."""

    store_url: str
    dataset: str
    labels: list[str]
    image_size: int
    model_dir: str
    version: str
    train: TrainSettings
    resume: bool = False
    thresholds: ThresholdSettings = dataclasses.field(default_factory=ThresholdSettings)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> TrainPlan:
        thresholds = ThresholdSettings(**value.get("thresholds", {}))
        return cls(**(value | {"train": train_settings_from_dict(value["train"]), "thresholds": thresholds}))

    @property
    def checkpoint_dir(self) -> str:
        return os.path.join(self.model_dir, CHECKPOINT_DIR)

    def build(self, *, init_weights: bool = False) -> Any:
        """The plan's model, uncompiled; with ``init_weights`` it starts from ``train.init_weights``."""
        t = self.train
        return build_model(
            t.model,
            len(self.labels),
            self.image_size,
            init_weights=t.init_weights if init_weights else "none",
            augment=dataclasses.asdict(t.augment),
            seed=t.seed,
            dropout=t.dropout,
        )


def new_version(model: str) -> str:
    return f"{model}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"


class Cluster:
    """This process's place among the training workers, and how to talk to the others."""

    def __init__(self, rank: int = 0, size: int = 1, gather: Callable[[str], list[str]] | None = None) -> None:
        self.rank = rank
        self.size = size
        self._gather = gather

    @property
    def is_chief(self) -> bool:
        return self.rank == 0

    def all_gather(self, value: Any) -> list[Any]:
        """Every worker's ``value`` (JSON-able), in rank order."""
        if self.size == 1 or self._gather is None:
            return [value]
        return [json.loads(v) for v in self._gather(json.dumps(value))]
