"""The pictures of the worklist page: a film's thumbnail and its heatmap as a coloured, see-through overlay."""

from __future__ import annotations

import base64

import numpy as np

#: The most a heatmap covers the film: the coldest parts stay clear, the hottest 55% opaque.
OVERLAY_ALPHA = 0.55


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
