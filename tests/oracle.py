"""The Finding Labels rule restated in plain Python: the oracle the Spark validation is checked against.

The pipeline parses labels in Spark (``xray_spark.prepare.metadata``); these functions
say the same rule independently, so a test can compare what the store holds with what
the rule gives.
"""

from __future__ import annotations

from xray_spark.labels import ALIASES, FINDINGS, NO_FINDING

SEPARATOR = "|"


class UnknownFindingError(ValueError):
    """A label text holds a token that is not one of the 14 findings."""

    def __init__(self, token: str, text: str) -> None:
        super().__init__(f"unknown finding {token!r} in {text!r}")
        self.token = token


def canonical_finding(token: str) -> str:
    """Map a finding spelling (``Infiltrate``) to its ChestX-ray14 name, or raise."""
    token = token.strip()
    name = ALIASES.get(token, token)
    if name not in FINDINGS:
        raise UnknownFindingError(token, token)
    return name


def parse_finding_labels(text: str | None) -> list[str]:
    """``"Effusion|Mass"`` -> ``["Effusion", "Mass"]``; ``"No Finding"`` -> ``[]``.

    Raises :class:`UnknownFindingError` for a token outside the vocabulary (an empty text
    included: an image with no label at all is not the same as ``No Finding``).
    """
    if text is None or not text.strip():
        raise UnknownFindingError("", text or "")
    tokens = [t.strip() for t in text.split(SEPARATOR)]
    if tokens == [NO_FINDING]:
        return []
    found: list[str] = []
    for token in tokens:
        try:
            name = canonical_finding(token)
        except UnknownFindingError:
            raise UnknownFindingError(token, text) from None
        if name not in found:
            found.append(name)
    return found
