"""Readers' verdicts as training labels: the rule, in one place.

A reader's verdict on a film is *complete* when every finding the model called is confirmed or
rejected, or the film is marked *no finding*. Only complete verdicts (each reader's newest)
become labels: confirmed and missed findings positive, every other finding negative (*no
finding*: all negative). Where several readers gave complete verdicts on one film, a finding is
positive when at least half of them call it positive (a tie counts as positive: for a second
reader, a finding one of two radiologists saw is worth learning). A verdict's label wins over
the film's label from a labels CSV. Notes are never read here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def film_labels(verdicts: Iterable[Mapping[str, Any]], labels: Sequence[str]) -> dict[str, tuple[str, int]]:
    """image_id -> (the label vector as ``"0"``/``"1"`` characters in ``labels`` order, readers counted).

    ``verdicts``: rows of ``xray.verdicts`` (``image_id``, ``current``, ``complete``, ``confirmed``,
    ``missed``, ``no_finding``); rows not current or not complete are left out.
    """
    votes: dict[str, list[set[str]]] = {}
    for row in verdicts:
        if not (row["current"] and row["complete"]):
            continue
        positive = set() if row["no_finding"] else {*(row["confirmed"] or ()), *(row["missed"] or ())}
        votes.setdefault(row["image_id"], []).append(positive)
    out = {}
    for image_id, readers in votes.items():
        n = len(readers)
        vector = "".join("1" if 2 * sum(label in r for r in readers) >= n else "0" for label in labels)
        out[image_id] = (vector, n)
    return out
