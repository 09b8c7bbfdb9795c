"""What one delivery run is, fixed when it starts, and the shape of its summary."""

from __future__ import annotations

import dataclasses
from typing import TypedDict

from pyspark.sql import SparkSession

from xray_spark.config import Settings
from xray_spark.destinations import Destination
from xray_spark.lake import Lake, new_run_id
from xray_spark.model_card import ModelCard


@dataclasses.dataclass(frozen=True)
class DeliverRun:
    """A delivery run's context: where it reads and writes, the champion it delivers, where to, under which id."""

    spark: SparkSession
    lake: Lake
    settings: Settings
    card: ModelCard
    targets: tuple[Destination, ...]
    secondary_capture: bool
    run_id: str = dataclasses.field(default_factory=new_run_id)

    @property
    def dataset(self) -> str:
        return self.settings.dataset

    @property
    def version(self) -> str:
        return self.card.version


class DeliverySummary(TypedDict, total=False):
    """What ``run_delivery`` returns (and ``--summary-json`` writes)."""

    dataset: str
    model_version: str
    run_id: str
    secondary_capture: bool
    films_scored: int
    to_deliver: int
    retried: int  # of to_deliver: films tried before (within deliver.retry_days of their first try)
    aged_out: int  # films given up tonight because their first try was more than deliver.retry_days ago
    aged_out_reasons: dict[str, int]
    destinations: list[str]
    delivered: dict[str, dict[str, int]]  # per destination: films per status
    sent: int
    failed: int
    given_up: int
    errors: dict[str, int]  # the ten commonest reasons of failed films
    given_up_reasons: dict[str, int]
    send_seconds: float
    seconds: float
