"""The worklist run's summary as the console shows it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def worklist_summary_text(summary: Mapping[str, Any]) -> str:
    """The worklist run's summary as the console shows it: what the page holds and where it is."""
    return (
        f"worklist {summary['dataset']} {summary['score_date']}: {summary['films']:,} of "
        f"{summary['films_scored_that_date']:,} films, {summary['with_heatmap']:,} with a heatmap, "
        f"{summary['patients']:,} patient pages\npage: {summary['page']}"
    )
