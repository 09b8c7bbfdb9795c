"""What one monitoring run is, fixed when it starts, and the shape of its summary."""

from __future__ import annotations

import dataclasses
from typing import Any, TypedDict

from xray_spark.config import Settings
from xray_spark.model_card import ModelCard


@dataclasses.dataclass(frozen=True)
class MonitorRun:
    """A monitoring run's context: the settings, the champion whose nights are tested, the reference in words."""

    settings: Settings
    card: ModelCard
    reference: str = ""

    @property
    def dataset(self) -> str:
        return self.settings.dataset


class NightSummary(TypedDict, total=False):
    run_id: str
    score_date: str
    films: int
    tested: bool
    alerts: list[str]  # the measures that moved (tested nights)


class MonitorSummary(TypedDict, total=False):
    """What ``run_monitor`` returns (and ``--summary-json`` writes)."""

    dataset: str
    model_version: str
    reference: str
    nights: list[NightSummary]
    alerts: list[dict[str, Any]]  # each alert: the night, the measure, the reference's and the night's values
    note: str  # why nothing was tested
