"""The scoring run's summary as the console shows it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def score_summary_text(summary: Mapping[str, Any], *, new_only: bool) -> str:
    """The scoring run's summary as the console shows it."""
    lines = [
        f"score {summary['run_id']}  model={summary['model_version']}  dataset={summary['dataset']}",
        f"  {summary['studies_in_store']:,} studies in the store, {summary['to_score']:,} to score"
        + (f" ({summary['already_scored']:,} already scored by this model)" if new_only else ""),
        f"  {summary['written']:,} predictions written to xray.predictions "
        f"(score_date={summary['score_date']}) in {summary['seconds']:.1f} s",
    ]
    refused = summary.get("not_scored", {}).get("films", 0)
    if refused:
        lines.append(f"  NOT SCORED: {refused:,} films, {summary['not_scored']['reason']} (xray.not_scored)")
    maps = summary["heatmaps"]
    if maps["written"]:
        lines.append(
            f"  {maps['written']:,} heatmaps ({maps['choice']}) written to xray.heatmaps in {maps['seconds']:.1f} s"
        )
    return "\n".join(lines)
