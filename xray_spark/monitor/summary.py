"""The lines a person reads after monitoring: what moved on which night, and by how much."""

from __future__ import annotations

from typing import Any


def monitor_summary_text(summary: dict[str, Any]) -> str:
    """One line when nothing moved (or nothing was tested), else one line per alert."""
    if summary.get("note"):
        return f"monitor {summary['dataset']}: {summary['note']}"
    tested = [n for n in summary["nights"] if n.get("tested")]
    head = (
        f"monitor {summary['dataset']}: {len(summary['nights'])} nights, {len(tested)} tested against "
        f"{summary.get('reference', 'the reference')}"
    )
    if not summary["alerts"]:
        return f"{head}; nothing moved"
    lines = [f"{head}; {len(summary['alerts'])} alerts:"]
    for a in summary["alerts"]:
        lines.append(
            f"  {a['score_date']} ({a['run_id']}): {a['measure']} moved from {a['reference_value']} "
            f"to {a['night_value']} (p = {a['p_value']:.2g})"
        )
    return "\n".join(lines)
