"""The finding vocabulary of ChestX-ray14, multi-hot vectors, sample weights, label-set choice, column names."""

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


def probability_column(finding: str) -> str:
    """The prediction column of a finding: ``Pleural_Thickening`` -> ``p_pleural_thickening``."""
    return f"p_{column_name(finding)}"


def raw_score_column(finding: str) -> str:
    """The model's own output before calibration: ``Pleural_Thickening`` -> ``raw_pleural_thickening``."""
    return f"raw_{column_name(finding)}"
