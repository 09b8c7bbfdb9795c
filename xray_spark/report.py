"""Summaries people read: console tables and plots."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

from xray_spark.labels import FINDINGS, NO_FINDING


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain fixed-width table; numbers right-aligned."""
    cells = [[str(h) for h in headers]] + [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    numeric = [
        bool(rows) and all(isinstance(row[i], int | float) or row[i] == "" for row in rows) for i in range(len(headers))
    ]

    def line(row: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if numeric[i] else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )

    out = [line(cells[0]), "  ".join("-" * w for w in widths)]
    out.extend(line(r) for r in cells[1:])
    return "\n".join(out)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def score_summary_text(summary: Mapping[str, Any], *, new_only: bool) -> str:
    """The scoring run's summary as the console shows it."""
    lines = [
        f"score {summary['run_id']}  model={summary['model_version']}  dataset={summary['dataset']}",
        f"  {summary['studies_in_store']:,} studies in the store, {summary['to_score']:,} to score"
        + (f" ({summary['already_scored']:,} already scored by this model)" if new_only else ""),
        f"  {summary['written']:,} predictions written to xray.predictions "
        f"(score_date={summary['score_date']}) in {summary['seconds']:.1f} s",
    ]
    maps = summary["heatmaps"]
    if maps["written"]:
        lines.append(
            f"  {maps['written']:,} heatmaps ({maps['choice']}) written to xray.heatmaps in {maps['seconds']:.1f} s"
        )
    return "\n".join(lines)


def worklist_summary_text(summary: Mapping[str, Any]) -> str:
    """The worklist run's summary as the console shows it: what the page holds and where it is."""
    return (
        f"worklist {summary['dataset']} {summary['score_date']}: {summary['films']:,} of "
        f"{summary['films_scored_that_date']:,} films, {summary['with_heatmap']:,} with a heatmap, "
        f"{summary['patients']:,} patient pages\npage: {summary['page']}"
    )


def prepare_summary_text(summary: Mapping[str, Any]) -> str:
    """The prepare run's summary as the console shows it."""
    out = io.StringIO()
    meta = summary["metadata"]
    out.write(f"prepare {summary['run_id']}  dataset={summary['dataset']}  mode={summary.get('mode')}\n")
    out.write(
        f"metadata  {meta['file']}: {meta['rows']:,} rows, {meta['valid_rows']:,} valid, {meta['patients']:,} patients"
    )
    if meta.get("already_in_store"):
        out.write(f", {meta['already_in_store']:,} already in the store")
    out.write("\n\n")
    label_set = summary["label_set"]
    store_counts = summary.get("store_finding_counts", {})
    rows = []
    for name in (*FINDINGS, NO_FINDING):
        kept = "yes" if name in label_set else ("" if name == NO_FINDING else "no")
        row = [name, meta["finding_counts"].get(name, 0)]
        if store_counts:
            row.append(store_counts.get(name, 0))
        row.append(kept)
        rows.append(row)
    headers = ["finding", "metadata images"] + (["in store"] if store_counts else []) + ["in label set"]
    out.write(format_table(headers, rows) + "\n")
    if "images" in summary:
        im = summary["images"]
        out.write(
            f"\nimages    {im['files_found']:,} files found, {im['with_metadata']:,} with metadata, "
            f"{im['written']:,} written to the store\n"
        )
        out.write(
            _dicom_lines(summary["dicom"])
            if "dicom" in summary
            else f"          {im['metadata_rows_without_file']:,} metadata rows without a file, "
            f"{im['files_without_metadata']:,} files without metadata"
        )
        if im.get("converted"):
            conv = ", ".join(f"{n:,} {k}" for k, n in sorted(im["converted"].items()))
            out.write(f"\n          converted to 8-bit grayscale: {conv}")
        out.write("\n")
    if "quarantine" in summary:
        q = summary["quarantine"]
        reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(q["by_reason"].items())) or "none"
        out.write(f"quarantine {q['total']:,} ({q['fraction']:.2%}, limit {q['max_fraction']:.0%}): {reasons}\n")
    if "splits" in summary:
        rows = [[s, v["patients"], v["images"]] for s, v in sorted(summary["splits"].items())]
        out.write("\n" + format_table(["split", "patients", "images"], rows) + "\n")
    if "store_rows" in summary:
        out.write(f"\nstore     {summary['store']}: {summary['store_rows']:,} images\n")
    out.write(f"reports   {summary['report_dir']}\n")
    out.write(f"took      {summary['seconds']:.1f} s\n")
    return out.getvalue()


def _dicom_lines(dicom: Mapping[str, Any]) -> str:
    """What a DICOM export held besides the films, and what was set aside (not quarantined)."""
    skipped = ", ".join(f"{k} {v:,}" for k, v in sorted(dicom["skipped"].items())) or "none"
    return (
        f"          {dicom['dicom_files']:,} DICOM files, {dicom['dicomdir_files']:,} DICOMDIR, "
        f"{dicom['not_dicom_files']:,} not DICOM; {dicom['duplicate_instances']:,} duplicate instances, "
        f"{dicom['already_in_store']:,} already in the store\n"
        f"skipped   {sum(dicom['skipped'].values()):,} not frontal chest films: {skipped}"
    )


def finding_frequency_chart(summary: Mapping[str, Any]) -> bytes:
    """A horizontal bar chart (PNG bytes) of images per finding, the kept label set highlighted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = summary["metadata"]["finding_counts"]
    label_set = set(summary["label_set"])
    names = sorted(FINDINGS, key=lambda n: counts.get(n, 0))
    values = [counts.get(n, 0) for n in names]
    colours = ["#1f77b4" if n in label_set else "#b0b0b0" for n in names]
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=100)
    ax.barh(names, values, color=colours)
    for y, v in enumerate(values):
        ax.text(v, y, f" {v:,}", va="center", fontsize=8)
    min_cases = summary.get("label_set_rule", {}).get("min_cases", 0)
    if min_cases:
        ax.axvline(min_cases, color="#d62728", linestyle="--", linewidth=1)
        ax.text(min_cases, -0.9, f" labels.min_cases={min_cases:,}", color="#d62728", fontsize=8)
    total = summary["metadata"]["valid_rows"]
    normal = counts.get(NO_FINDING, 0)
    ax.set_title(f"Images per finding, {total:,} metadata rows ({normal:,} No Finding); blue = label set", fontsize=10)
    ax.set_xlabel("images")
    ax.margins(x=0.15)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def write_history_csv(path: str, history: Sequence[Mapping[str, Any]]) -> None:
    """The per-epoch history (loss, binary accuracy, per-finding and mean AUROC, train and val)."""
    import csv

    columns: list[str] = []
    for row in history:
        columns.extend(k for k in row if k not in columns)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    _pyplot().close(fig)
    return buffer.getvalue()


def training_curves_png(history: Sequence[Mapping[str, Any]], labels: Sequence[str]) -> bytes:
    """Loss (train and val) and mean AUROC (train and val) per epoch."""
    plt = _pyplot()
    epochs = [r["epoch"] for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    ax1.plot(epochs, [r["loss"] for r in history], "o-", label="train (running, augmented)")
    ax1.plot(epochs, [r.get("val_loss") for r in history], "o-", label="val")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.legend()
    ax1.set_title("Loss")
    ax2.plot(epochs, [r.get("auroc_mean") for r in history], "o-", label="train")
    ax2.plot(epochs, [r.get("val_auroc_mean") for r in history], "o-", label="val")
    ax2.axhline(0.5, color="#999999", linestyle=":", linewidth=1)
    ax2.set_ylim(0.4, 1.0)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel(f"mean AUROC over {len(labels)} findings")
    ax2.legend()
    ax2.set_title("Mean AUROC (0.5 = chance)")
    fig.tight_layout()
    return _png(fig)


def reliability_png(y_true: Any, y_prob: Any, labels: Sequence[str], title: str) -> bytes:
    """A reliability diagram per finding: observed frequency against mean probability in 10 bins."""
    import numpy as np

    from xray_spark.metrics import calibration_bins, expected_calibration_error

    plt = _pyplot()
    cols = 4
    rows = -(-len(labels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.8 * rows), dpi=90, squeeze=False)
    for ax in axes.ravel()[len(labels) :]:
        ax.axis("off")
    for ax, (i, name) in zip(axes.ravel(), enumerate(labels), strict=False):
        y, p = np.asarray(y_true)[:, i], np.asarray(y_prob)[:, i]
        table = calibration_bins(y, p)
        ax.plot([0, 1], [0, 1], color="#999999", linestyle=":", linewidth=1)
        if table:
            means, freqs, _ = zip(*table, strict=True)
            ax.plot(means, freqs, "o-", color="#1f77b4", linewidth=1.2, markersize=3)
            for m, f, n in table:
                ax.annotate(str(n), (m, f), fontsize=6, xytext=(2, -8), textcoords="offset points", color="#555555")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(f"{name}  ECE {expected_calibration_error(y, p):.3f}", fontsize=8)
        ax.tick_params(labelsize=6)
    fig.supxlabel("mean predicted probability (bin)", fontsize=8)
    fig.supylabel("observed frequency", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _png(fig)


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


def roc_curves_png(y_true: Any, y_score: Any, labels: Sequence[str], title: str) -> bytes:
    """One ROC curve per finding, AUROC in the legend."""
    import numpy as np

    from xray_spark.metrics import auroc, roc_curve

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 6.5), dpi=100)
    cmap = plt.get_cmap("tab20")
    for i, name in enumerate(labels):
        y = np.asarray(y_true)[:, i]
        if y.min() == y.max():
            continue
        fpr, tpr, _ = roc_curve(y, np.asarray(y_score)[:, i])
        ax.plot(fpr, tpr, color=cmap(i % 20), linewidth=1.3, label=f"{name} {auroc(y, np.asarray(y_score)[:, i]):.3f}")
    ax.plot([0, 1], [0, 1], color="#999999", linestyle=":", linewidth=1)
    ax.set_xlabel("1 - specificity (false positive rate)")
    ax.set_ylabel("sensitivity (true positive rate)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="lower right", title="AUROC", title_fontsize=8)
    fig.tight_layout()
    return _png(fig)


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


def query_text(spark: Any, query: str, *, fmt: str = "table", limit: int = 1000) -> str:
    """A read-only query's result as a table, CSV or JSON lines (at most ``limit`` rows).

    Anything but a query or a SHOW/DESCRIBE/EXPLAIN is refused before Spark runs it
    (:func:`xray_spark.readonly.check_read_only`).
    """
    import csv
    import json

    from xray_spark.errors import UsageError, first_line
    from xray_spark.readonly import check_read_only, client_session

    with client_session(spark):
        check_read_only(spark, query)
        try:
            df = spark.sql(query)
            rows = df.limit(limit).collect()
        except Exception as exc:  # AnalysisException / ParseException: the query is wrong
            raise UsageError(f"query failed: {first_line(exc)}") from None
    names = df.columns
    if fmt == "json":
        return "\n".join(json.dumps(r.asDict(recursive=True), default=str) for r in rows)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(names)
        writer.writerows([[_cell(v) for v in r] for r in rows])
        return buffer.getvalue().rstrip("\n")
    return format_table(names, [[_cell(v) for v in r] for r in rows])


def _cell(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if value is None:
        return ""
    return value
