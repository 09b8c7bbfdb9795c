"""The deliver run's summary as the console shows it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def deliver_summary_text(summary: Mapping[str, Any]) -> str:
    """Per destination, what was sent and what failed (with the commonest reasons)."""
    head = (
        f"deliver {summary['dataset']} (model {summary['model_version']}): {summary['films_scored']:,} films scored, "
        f"{summary['to_deliver']:,} to deliver"
    )
    if summary.get("retried"):
        head += f" ({summary['retried']:,} of them tried before)"
    aged = [
        f"  given up x{n} (not tried again; deliver --retry-given-up): {error}"
        for error, n in summary.get("aged_out_reasons", {}).items()
    ]
    if not summary["to_deliver"]:
        return "\n".join([head + ": nothing new (every film's results were sent before)", *aged])
    lines = [head + f", {summary['seconds']:.1f} s", *aged]
    for name, counts in summary.get("delivered", {}).items():
        line = f"  {name}: {counts.get('sent', 0):,} sent, {counts.get('failed', 0):,} failed"
        lines.append(line + (f", {counts['given_up']:,} given up" if counts.get("given_up") else ""))
    for error, n in summary.get("errors", {}).items():
        lines.append(f"  failed x{n}: {error}")
    for error, n in summary.get("given_up_reasons", {}).items():
        lines.append(f"  given up x{n} (not tried again; deliver --retry-given-up): {error}")
    return "\n".join(lines)


def exchange_status(summary: dict) -> int:
    """A night's exit status for its exchanges with the PACS: 4 when results were not acknowledged or the pull from
    a DICOMweb archive did not end, else 0."""
    from xray_spark.cli import EXIT_UNDELIVERED

    pulled = summary.get("dicomweb_pull", {}).get("complete", True)
    return EXIT_UNDELIVERED if summary.get("deliver", {}).get("failed") or not pulled else 0
