"""The evaluation report as one self-contained HTML page (the ROC curves embedded as a PNG)."""

from __future__ import annotations

import base64
import html
import math
from typing import Any

from xray_spark.metrics import mean_auroc
from xray_spark.model_card import ModelCard


def html_report(
    card: ModelCard,
    dataset: str,
    split: str,
    metrics: list[dict[str, Any]],
    pictures: tuple[bytes, bytes],
    n_images: int,
    n_patients: int,
    located: dict[str, Any] | None = None,
) -> str:
    """The page: a table per finding, the ROC curves and the reliability diagrams (``pictures``)."""
    same = " (patients never shared with the train split)" if dataset == str(card.dataset) else ""

    def cell(v: Any) -> str:
        if v is None:
            return "not calibrated"
        if isinstance(v, float):
            return "n/a" if math.isnan(v) else f"{v:.3f}"
        return html.escape(str(v))

    rows = "\n".join(
        "<tr>"
        + "".join(f"<td>{cell(m[k])}</td>" for k in ("finding", "positives", "auroc"))
        + f"<td>{cell(m['auroc_low'])} &ndash; {cell(m['auroc_high'])}</td>"
        + "".join(
            f"<td>{cell(m[k])}</td>"
            for k in (
                "threshold",
                "sensitivity",
                "specificity",
                "true_prevalence",
                "predicted_prevalence",
                "brier",
                "ece",
            )
        )
        + "</tr>"
        for m in metrics
    )
    mean = mean_auroc({m["finding"]: m["auroc"] for m in metrics})
    roc, reliability = (base64.b64encode(p).decode("ascii") for p in pictures)
    rule = html.escape(card.threshold_rule)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>xray-spark evaluation {html.escape(card.version)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:70em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:right}}td:first-child{{text-align:left}}</style></head>
<body><h1>Evaluation of {html.escape(card.version)}</h1>
<p>Model <b>{html.escape(card.kind)}</b> trained on dataset {html.escape(str(card.dataset))};
evaluated on the <b>{html.escape(split)}</b> films of dataset <b>{html.escape(dataset)}</b>: {n_images:,} images of
{n_patients:,} patients{same}. Mean AUROC <b>{cell(mean)}</b>.
Intervals are 95% bootstrap intervals over patients. Probabilities are calibrated per finding
(Platt scaling on the validation split); thresholds: {rule}. A finding with too few validation
positives is "not calibrated" and never called. ECE: expected calibration error (10 bins).</p>
<table><tr><th>finding</th><th>positives</th><th>AUROC</th><th>95% CI</th><th>threshold</th>
<th>sensitivity</th><th>specificity</th><th>true prevalence</th><th>predicted prevalence</th>
<th>Brier</th><th>ECE</th></tr>
{rows}
</table>
<h2>ROC curves</h2><img alt="ROC curves" src="data:image/png;base64,{roc}">
<h2>Reliability</h2><img alt="reliability diagrams" src="data:image/png;base64,{reliability}">
{_localization_html(located) if located else ""}
</body></html>
"""


def _localization_html(located: dict[str, Any]) -> str:
    """The heatmaps against the hand-drawn boxes: pointing game, its controls, IoBB and IoU at 0.3 and 0.5."""
    from xray_spark.evaluate.summary import localization_rows

    headers, rows = localization_rows(located)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "\n".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(v if isinstance(v, str) else f'{v:.3f}' if isinstance(v, float) else str(v))}</td>"
            for v in row
        )
        + "</tr>"
        for row in rows
    )
    return f"""<h2>Localization</h2>
<p>{located["boxes_with_heatmap"]:,} hand-drawn boxes with a heatmap on this split. Pointing game: the heatmap's
peak in the box (tolerant: within 15 px at 224 px); shuffled: each box against another film's heatmap; chance: the
share of the image the widened box covers. IoBB / IoU accuracy: the share of boxes whose predicted box overlaps it by
at least the threshold (Wang et al., CVPR 2017).</p>
<table><tr>{head}</tr>
{body}
</table>"""
