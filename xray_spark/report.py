"""What every stage's summaries are built from: fixed-width console tables and matplotlib plots as PNG bytes.

Each stage formats its own summary (``<stage>/summary.py``); the read-only SQL runner is
:func:`xray_spark.readonly.query_text`.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any


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


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig: Any) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    pyplot().close(fig)
    return buffer.getvalue()


def training_curves_png(history: Sequence[Mapping[str, Any]], labels: Sequence[str]) -> bytes:
    """Loss (train and val) and mean AUROC (train and val) per epoch."""
    plt = pyplot()
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
    return png_bytes(fig)


def reliability_png(y_true: Any, y_prob: Any, labels: Sequence[str], title: str) -> bytes:
    """A reliability diagram per finding: observed frequency against mean probability in 10 bins."""
    import numpy as np

    from xray_spark.metrics import calibration_bins, expected_calibration_error

    plt = pyplot()
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
    return png_bytes(fig)


def roc_curves_png(y_true: Any, y_score: Any, labels: Sequence[str], title: str) -> bytes:
    """One ROC curve per finding, AUROC in the legend."""
    import numpy as np

    from xray_spark.metrics import auroc, roc_curve

    plt = pyplot()
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
    return png_bytes(fig)
