"""The finding vocabulary of ChestX-ray14, label parsing, multi-hot vectors, label-set choice."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

#: The 14 findings of ChestX-ray14, in the order of the NIH release notes (alphabetical).
FINDINGS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Effusion",
    "Emphysema",
    "Fibrosis",
    "Hernia",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pleural_Thickening",
    "Pneumonia",
    "Pneumothorax",
)

#: The token that stands alone for an image with none of the findings.
NO_FINDING = "No Finding"

#: Spellings seen in NIH side files for the same finding (the bounding-box file says Infiltrate).
ALIASES: Mapping[str, str] = {"Infiltrate": "Infiltration"}

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


def multi_hot(findings: Iterable[str], label_set: Sequence[str]) -> np.ndarray:
    """A float32 vector with 1 at the position of each finding that is in ``label_set``."""
    vector = np.zeros(len(label_set), dtype=np.float32)
    index = {name: i for i, name in enumerate(label_set)}
    for name in findings:
        if name in index:
            vector[index[name]] = 1.0
    return vector


def sample_weight(n_findings: int, base: float = 0.1, per_finding: float = 1.0) -> float:
    """The thesis's weight ``0.1 + number of findings``, with both terms configurable."""
    return float(base + per_finding * n_findings)


def choose_label_set(counts: Mapping[str, int], findings: Sequence[str], min_cases: int) -> list[str]:
    """The configured findings that have at least ``min_cases`` images, in vocabulary order."""
    return [name for name in FINDINGS if name in findings and counts.get(name, 0) >= min_cases]


def column_name(finding: str) -> str:
    """A finding as a lower-case column suffix: ``Pleural_Thickening`` -> ``pleural_thickening``."""
    return finding.lower()
