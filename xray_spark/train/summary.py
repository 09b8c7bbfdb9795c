"""The training run's summary as the console shows it: validation AUROC and operating points per finding."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from xray_spark.report import format_table


def auroc_table_text(val_auroc: Mapping[str, float], points: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """Per-finding validation AUROC (and each operating point: rule, threshold, sensitivity, specificity)."""
    import math

    rows = []
    for name, value in val_auroc.items():
        row = [name, value if not math.isnan(value) else "n/a"]
        if points is not None:
            point = points.get(name, {})
            if point.get("threshold") is None:
                row += [point.get("val_positives", ""), "not calibrated", "", "", ""]
            else:
                row += [point["val_positives"], point["rule"], point["threshold"]]
                row += [point["val_sensitivity"], point["val_specificity"]]
        rows.append(row)
    defined = [v for v in val_auroc.values() if not math.isnan(v)]
    mean = sum(defined) / len(defined) if defined else float("nan")
    rows.append(["mean", mean] + ([""] * 5 if points is not None else []))
    headers = ["finding", "val AUROC"]
    if points is not None:
        headers += ["val positives", "rule", "threshold", "val sensitivity", "val specificity"]
    return format_table(headers, rows)
