"""The lines a person reads after monitoring: what moved on which night, and by how much."""

from __future__ import annotations

from typing import Any


def monitor_summary_text(summary: dict[str, Any]) -> str:
    """One line when nothing moved (or nothing was tested), else one line per alert."""
    if summary.get("note"):
        return f"monitor {summary['dataset']}: {summary['note']}"
    nights = summary["nights"]
    tested = [n for n in nights if n.get("tested")]
    head = f"monitor {summary['dataset']}: "
    last = nights[-1] if nights else None
    if last is not None and last.get("tested"):
        moved = len(last.get("alerts", []))
        head += (
            f"the last night ({last['score_date']}, {last['films']:,} films) compared with "
            f"{summary.get('reference', 'the reference')}, {last.get('against', 'its films')}, "
            f"{last.get('measures', 0)} measures: {f'{moved} moved' if moved else 'nothing moved'}"
        )
    elif last is not None:
        head += f"the last night ({last['score_date']}) was not tested: {last.get('why', 'part of the reference')}"
    head += f"; {len(nights)} {'night' if len(nights) == 1 else 'nights'} looked at, {len(tested)} tested"
    if not summary["alerts"]:
        return head if last is not None and last.get("tested") else f"{head}, nothing moved"
    lines = [f"{head}; {len(summary['alerts'])} alerts in all:"]
    for a in summary["alerts"]:
        lines.append(
            f"  {a['score_date']} ({a['run_id']}): {a['measure']} moved from {a['reference_value']} "
            f"to {a['night_value']} (p = {a['p_value']:.2g})"
        )
    return "\n".join(lines)
