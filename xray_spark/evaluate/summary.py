"""The evaluate run's summary as the console shows it (the HTML report is :mod:`xray_spark.evaluate.html`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from xray_spark.report import format_table


def evaluation_table_text(summary: Mapping[str, Any]) -> str:
    """The evaluate job's per-finding table: AUROC, the operating point's test rates, calibration."""
    rows = []
    for m in summary["metrics"]:
        threshold = "not calibrated" if m["threshold"] is None else m["threshold"]
        rows.append(
            [m["finding"], m["positives"], m["auroc"], f"{m['auroc_low']:.3f}-{m['auroc_high']:.3f}", threshold]
            + [m[k] for k in ("sensitivity", "specificity", "true_prevalence", "predicted_prevalence", "brier", "ece")]
        )
    rows.append(["mean", "", summary["mean_auroc"], "", "", "", "", "", "", "", summary["mean_ece"]])
    headers = ["finding", "positives", "AUROC", "95% CI", "threshold", "sensitivity", "specificity"]
    headers += ["true prev.", "pred. prev.", "Brier", "ECE"]
    return format_table(headers, rows)


def localization_rows(located: Mapping[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """The localization table: per finding and over all, the pointing game, its controls, IoBB and IoU."""
    headers = ["finding", "boxes", "pointing", "tolerant", "shuffled", "chance", "IoBB>=0.3", "IoBB>=0.5"]
    headers += ["IoU>=0.3", "IoU>=0.5"]
    items = [*located["by_finding"].items(), ("all", located["overall"])] if located["by_finding"] else []
    rows = [
        [
            name,
            m["boxes"],
            m["pointing"],
            m["pointing_tolerant"],
            m["shuffled"],
            m["chance"],
            *(m["iobb_accuracy"][t] for t in ("0.3", "0.5")),
            *(m["iou_accuracy"][t] for t in ("0.3", "0.5")),
        ]
        for name, m in items
    ]
    return headers, rows


def evaluation_summary_text(summary: Mapping[str, Any]) -> str:
    """The evaluate run's summary as the console shows it: the table per finding, and localization if asked."""
    lines = [
        f"evaluate {summary['model_version']} on the {summary['split']} films of dataset {summary['dataset']}: "
        f"{summary['images']:,} images of {summary['patients']:,} patients",
        evaluation_table_text(summary),
        f"thresholds: {summary['threshold_rule']}",
    ]
    if "localization" in summary:
        lines.append(f"\nlocalization: {summary['localization']['boxes_with_heatmap']:,} boxes with a heatmap")
        lines.append(format_table(*localization_rows(summary["localization"])))
    lines.append(f"report: {summary['report']}")
    return "\n".join(lines)
