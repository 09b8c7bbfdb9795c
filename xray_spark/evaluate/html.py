"""The evaluation report as one self-contained HTML page (the ROC curves embedded as a PNG)."""

from __future__ import annotations

import base64
import html
import math
from typing import Any

from xray_spark.metrics import mean_auroc


def html_report(
    meta: dict[str, Any], split: str, metrics: list[dict[str, Any]], roc_png: bytes, n_images: int, n_patients: int
) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "n/a" if math.isnan(v) else f"{v:.3f}"
        return html.escape(str(v))

    rows = "\n".join(
        "<tr>"
        + "".join(f"<td>{cell(m[k])}</td>" for k in ("finding", "positives", "auroc"))
        + f"<td>{cell(m['auroc_low'])} &ndash; {cell(m['auroc_high'])}</td>"
        + "".join(
            f"<td>{cell(m[k])}</td>"
            for k in ("threshold", "sensitivity", "specificity", "true_prevalence", "predicted_prevalence")
        )
        + "</tr>"
        for m in metrics
    )
    mean = mean_auroc({m["finding"]: m["auroc"] for m in metrics})
    image = base64.b64encode(roc_png).decode("ascii")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>xray-spark evaluation {html.escape(meta["version"])}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:70em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:right}}td:first-child{{text-align:left}}</style></head>
<body><h1>Evaluation of {html.escape(meta["version"])}</h1>
<p>Model <b>{html.escape(str(meta.get("model")))}</b> trained on dataset {html.escape(str(meta.get("dataset")))};
evaluated on the <b>{html.escape(split)}</b> split: {n_images:,} images of {n_patients:,} patients
(patients never shared with the train split). Mean AUROC <b>{cell(mean)}</b>.
Intervals are 95% bootstrap intervals over patients; thresholds were chosen on the validation
split by Youden's J.</p>
<table><tr><th>finding</th><th>positives</th><th>AUROC</th><th>95% CI</th><th>threshold</th>
<th>sensitivity</th><th>specificity</th><th>true prevalence</th><th>predicted prevalence</th></tr>
{rows}
</table>
<h2>ROC curves</h2><img alt="ROC curves" src="data:image/png;base64,{image}">
</body></html>
"""
