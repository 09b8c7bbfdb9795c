"""What one challenge is, fixed once both models' films are aligned, and the shape of its summary."""

from __future__ import annotations

import dataclasses
from typing import Any, TypedDict

import numpy as np

from xray_spark.config import PromotionSettings
from xray_spark.model_card import ModelCard


@dataclasses.dataclass(frozen=True)
class ChallengeRun:
    """The two models, the rule written down before the test, and each model's outputs on the same films in the same
    order (``films[version]``: ``y`` labels, ``p`` probabilities, ``patients``, ``ids``)."""

    champion: ModelCard
    challenger: ModelCard
    rule: PromotionSettings
    dataset: str
    films: dict[str, dict[str, np.ndarray]]

    def of(self, who: str) -> dict[str, np.ndarray]:
        """``champion`` or ``challenger``'s films."""
        return self.films[(self.champion if who == "champion" else self.challenger).version]

    @property
    def labels(self) -> list[str]:
        """The findings both models have, in the champion's order."""
        return [x for x in self.champion.labels if x in self.challenger.labels]


class ChallengeSummary(TypedDict, total=False):
    """What ``run_challenge`` returns (and ``--summary-json`` writes)."""

    challenge_id: str
    at: str
    dataset: str
    split: str
    champion: str
    challenger: str
    passed: bool
    outcome: str  # PASS, FAIL or INCONCLUSIVE
    rules: str  # JSON of ``rule``
    films: int
    findings: list[dict[str, Any]]  # one per finding: the row of xray.challenges
    rule: list[dict[str, Any]]  # each rule, its outcome, its numbers
    page: str
    power: list[dict[str, Any]]
