"""``score.heatmaps``: which films of a scoring run get heatmaps (``none``, ``called`` or ``top:N``)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class HeatmapChoice:
    kind: str  # none | called | top
    n: int = 0

    def __str__(self) -> str:
        return f"top:{self.n}" if self.kind == "top" else self.kind


def parse_heatmap_choice(text: str) -> HeatmapChoice:
    """``none``, ``called`` or ``top:<N>`` (N >= 1); a ValueError naming the forms otherwise."""
    text = str(text).strip()
    if text in ("none", "called"):
        return HeatmapChoice(text)
    kind, _, n = text.partition(":")
    if kind == "top" and n.isdigit() and int(n) >= 1:
        return HeatmapChoice("top", int(n))
    raise ValueError(f"heatmaps {text!r}: use none, called or top:N (N >= 1), e.g. top:100")
