"""The synthetic patients and their films: who, when, which findings, and the pictures.

Shared by the NIH-layout archive (:mod:`xray_spark.dev.synthetic`) and the DICOM export
(:mod:`xray_spark.dev.dicom_archive`), so one seed gives the same films in both.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import numpy as np

from xray_spark.dev.anatomy import Anatomy, Box, render
from xray_spark.labels import FINDINGS, NO_FINDING

#: Relative prevalence of each finding among abnormal images (uneven, like the real archive).
PREVALENCE = dict(zip(FINDINGS, (1.4, 0.8, 0.9, 0.8, 1.4, 0.8, 0.8, 0.6, 1.6, 1.0, 1.1, 0.8, 0.7, 1.0), strict=True))


@dataclasses.dataclass(frozen=True)
class Study:
    image_id: str
    patient_id: int
    follow_up: int
    age: int
    sex: str
    view: str
    findings: tuple[str, ...]

    @property
    def finding_labels(self) -> str:
        return "|".join(self.findings) if self.findings else NO_FINDING


def _draw_findings(rng: np.random.Generator, previous: tuple[str, ...] | None) -> tuple[str, ...]:
    names = list(FINDINGS)
    weights = np.array([PREVALENCE[n] for n in names])
    if previous is None:
        if rng.random() < 0.5:
            return ()
        k = int(rng.choice((1, 2, 3), p=(0.6, 0.3, 0.1)))
        chosen = rng.choice(names, size=k, replace=False, p=weights / weights.sum())
    else:  # a follow-up: findings persist or resolve, new ones appear now and then
        chosen = [n for n in previous if rng.random() < 0.6]
        if rng.random() < 0.25:
            chosen.append(str(rng.choice(names, p=weights / weights.sum())))
    return tuple(n for n in FINDINGS if n in set(chosen))


def plan_studies(n_images: int, seed: int, first_patient: int = 1, most_per_patient: int = 8) -> list[Study]:
    """Patients with 1-8 follow-ups each (at most ``most_per_patient``: 1 for one night's films, one study per
    patient), numbered from ``first_patient``, until ``n_images`` studies."""
    rng = np.random.default_rng([seed, 0])
    studies: list[Study] = []
    patient = first_patient - 1
    while len(studies) < n_images:
        patient += 1
        n_follow = int(min(8, most_per_patient, 1 + rng.poisson(1.6)))
        age = int(rng.integers(18, 86))
        sex = "M" if rng.random() < 0.55 else "F"
        findings: tuple[str, ...] | None = None
        for fu in range(n_follow):
            if len(studies) >= n_images:
                break
            findings = _draw_findings(rng, findings)
            view = "PA" if rng.random() < 0.6 else "AP"
            studies.append(Study(f"{patient:08d}_{fu:03d}.png", patient, fu, age + fu // 3, sex, view, findings))
    return studies


def pixel_spacing(size: int) -> float:
    """Millimetres per pixel of a ``size``-pixel film (the NIH films are 1024 px at 0.143 mm)."""
    return round(0.143 * 1024 / size, 6)


def rendered(
    studies: Sequence[Study], size: int, seed: int, finding_contrast: float = 1.0
) -> Iterator[tuple[Study, np.ndarray, dict[str, Box]]]:
    """Each study with its picture (uint8) and the unit-square box of each finding (see ``anatomy.render``)."""
    anatomies: dict[int, Anatomy] = {}
    for i, study in enumerate(studies):
        if study.patient_id not in anatomies:
            anatomies[study.patient_id] = Anatomy.draw(np.random.default_rng([seed, 1, study.patient_id]))
        rng = np.random.default_rng([seed, 2, i])
        pixels, boxes = render(study.findings, anatomies[study.patient_id], study.view, size, rng, finding_contrast)
        yield study, pixels, boxes
