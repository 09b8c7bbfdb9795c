"""The prepare run's summary as the console shows it, and its chart of images per finding."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from xray_spark.labels import FINDINGS, NO_FINDING
from xray_spark.report import format_table, png_bytes, pyplot


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
            f"{im['written']:,} written to the store"
            + (f", {im['display_pictures']:,} display pictures" if im.get("display_pictures") else "")
            + "\n"
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
    plt = pyplot()
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
    return png_bytes(fig)
