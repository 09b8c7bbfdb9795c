"""The worklist's pictures: which heatmap a film shows, a heatmap as a coloured, see-through overlay; a patient's
probabilities as a chart."""

from __future__ import annotations

import base64
import html
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np

#: The most a heatmap covers the film: the coldest parts stay clear, the hottest 55% opaque.
OVERLAY_ALPHA = 0.55


def heatmap_to_show(called: Mapping[str, float], risk_finding: str | None, mapped: Collection[str]) -> str | None:
    """The finding whose heatmap a picture shows: the riskiest *called* finding that has a map (the risk finding
    when it is called, else the called finding of highest probability). ``called``: each called finding's
    probability; ``mapped``: the findings with a heatmap. None when no called finding has one: a finding that is
    not called is never drawn, on the worklist, in the app or in the Secondary Capture."""
    shown = [f for f in called if f in mapped]
    if not shown:
        return None
    return max(shown, key=lambda f: (f == risk_finding, called[f], f))


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def overlay_png(heatmap_png: bytes, side: int) -> bytes:
    """The heatmap (8-bit gray PNG) as an RGBA PNG of ``side`` px: a jet colour map, alpha rising with heat."""
    import cv2

    heat = cv2.imdecode(np.frombuffer(heatmap_png, np.uint8), cv2.IMREAD_GRAYSCALE)
    if heat is None:
        raise ValueError("a heatmap in xray.heatmaps is not a PNG")
    heat = cv2.resize(heat, (side, side), interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap(heat, cv2.COLORMAP_JET)  # BGR
    alpha = (heat.astype(np.float32) / 255.0 * OVERLAY_ALPHA * 255).astype(np.uint8)
    ok, png = cv2.imencode(".png", np.dstack([colour, alpha]))
    if not ok:
        raise ValueError("OpenCV failed to encode an overlay")
    return png.tobytes()


#: A heatmap's hot region: the connected part at or above this fraction of its peak that holds the peak.
HOT_FRACTION = 0.5


def hot_region(cam: np.ndarray, side: int) -> tuple[tuple[float, float], tuple[float, float, float, float]]:
    """The peak (x, y) and the box (x, y, w, h) of the hot region, in pixels of a ``side`` x ``side`` image."""
    import cv2

    full = cv2.resize(cam.astype(np.float32), (side, side), interpolation=cv2.INTER_LINEAR)
    y, x = np.unravel_index(int(np.argmax(full)), full.shape)
    hot = (full >= HOT_FRACTION * full[y, x]).astype(np.uint8)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(hot, connectivity=8)
    left, top, width, height, _ = stats[labels[y, x]]
    return (x + 0.5, y + 0.5), (float(left), float(top), float(width), float(height))


def hot_box(heatmap_png: bytes) -> tuple[float, float, float, float]:
    """A stored heatmap's hot box as fractions (x, y, w, h) of the square it covers."""
    import cv2

    heat = cv2.imdecode(np.frombuffer(heatmap_png, np.uint8), cv2.IMREAD_GRAYSCALE)
    side = heat.shape[0]
    _, (x, y, w, h) = hot_region(heat.astype(np.float32), side)
    return (x / side, y / side, w / side, h / side)


def probability_chart(points: Sequence[dict[str, Any]], findings: Sequence[str]) -> str:
    """Probability per film (x: the films in order, y: 0..1), one polyline per finding."""
    width, height, pad = 480, 200, 30
    n = max(len(points) - 1, 1)
    colours = ("#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
    lines = []
    for i, finding in enumerate(findings):
        xy = [
            (pad + (width - 2 * pad) * k / n, height - pad - (height - 2 * pad) * float(p["probs"].get(finding, 0.0)))
            for k, p in enumerate(points)
        ]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
        colour = colours[i % len(colours)]
        lines.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{path}"/>')
        lines.append(
            f'<text x="{width - pad + 4}" y="{xy[-1][1]:.1f}" font-size="11" fill="{colour}">'
            f"{html.escape(str(finding))}</text>"
        )
    axes = (
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#999"/>'
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#999"/>'
        f'<text x="4" y="{pad + 4}" font-size="10">1.0</text>'
        f'<text x="4" y="{height - pad}" font-size="10">0.0</text>'
    )
    svg = f'<svg width="{width + 90}" height="{height}" role="img" aria-label="probabilities">'
    return f"{svg}{axes}{''.join(lines)}</svg>"


def drift_chart(measure: str, nights: Sequence[dict[str, Any]], alpha: float) -> str:
    """One measure over nights (``nights``: score_date, p_value, alert, in night order): -log10 p as a line,
    alerts as red dots, the per-measure level ``alpha`` dashed (an alert needs at least that, Holm's steps more)."""
    width, height, pad, top = 360, 120, 26, 6.0
    n = max(len(nights) - 1, 1)

    def y(p: float | None) -> float:
        strength = min(-np.log10(max(float(p if p is not None else 1.0), 1e-300)), top)
        return height - pad - (height - 2 * pad) * strength / top

    xy = [(pad + (width - 2 * pad) * k / n, y(night["p_value"])) for k, night in enumerate(nights)]
    path = " ".join(f"{x:.1f},{v:.1f}" for x, v in xy)
    dots = "".join(
        f'<circle cx="{x:.1f}" cy="{v:.1f}" r="{4 if night["alert"] else 2}" '
        f'fill="{"#d62728" if night["alert"] else "#1f77b4"}">'
        f"<title>{html.escape(str(night['score_date']))}: p = {float(night['p_value'] or 1.0):.2g}</title></circle>"
        for (x, v), night in zip(xy, nights, strict=True)
    )
    level = y(alpha)
    first, last = (html.escape(str(nights[i]["score_date"])) for i in (0, -1)) if nights else ("", "")
    return (
        f'<figure class="drift"><svg width="{width}" height="{height}" role="img" aria-label="{html.escape(measure)}">'
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#999"/>'
        f'<line x1="{pad}" y1="{level:.1f}" x2="{width - pad}" y2="{level:.1f}" '
        'stroke="#d62728" stroke-dasharray="4 3"/>'
        f'<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{path}"/>{dots}'
        f'<text x="{pad}" y="{height - 8}" font-size="10">{first}</text>'
        f'<text x="{width - pad}" y="{height - 8}" font-size="10" text-anchor="end">{last}</text>'
        f'<text x="2" y="{pad - 8}" font-size="10">-log10 p (top {top:g})</text></svg>'
        f"<figcaption>{html.escape(measure)}</figcaption></figure>"
    )
