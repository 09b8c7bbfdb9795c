"""What one scoring run is: its id, its time, its dataset, its model, whether it scores only what is new."""

from __future__ import annotations

import dataclasses
import datetime as dt

from xray_spark.lake import new_run_id
from xray_spark.model_card import ModelCard


@dataclasses.dataclass(frozen=True)
class ScoreRun:
    """A scoring run's context, fixed when it starts; every row it writes carries ``scored_at``."""

    run_id: str
    dataset: str
    card: ModelCard
    scored_at: dt.datetime
    new_only: bool = False

    @classmethod
    def start(cls, dataset: str, card: ModelCard, *, new_only: bool) -> ScoreRun:
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        return cls(new_run_id(), dataset, card, now, new_only)

    @property
    def score_date(self) -> str:
        """The partition the run's rows land in (``score_date=YYYY-MM-DD``, UTC)."""
        return self.scored_at.date().isoformat()
