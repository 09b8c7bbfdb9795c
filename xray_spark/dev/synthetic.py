"""A synthetic archive in the exact NIH ChestX-ray14 layout, with learnable planted findings.

::

    python -m xray_spark.dev.synthetic --output DIR --images N --size PX --seed S

writes ``DIR/Data_Entry_2017.csv`` (the 11 header cells of the real file, the bracketed
ones split), ``DIR/BBox_List_2017.csv`` (boxes of the planted lesions, ``Infiltrate`` spelt
as in the real file) and ``DIR/images/PPPPPPPP_FFF.png`` (8-bit grayscale).

With ``--format dicom`` the same films are written as a PACS export instead (see
:mod:`xray_spark.dev.dicom_archive`). The pictures are drawn by :mod:`xray_spark.dev.anatomy`.
Everything is a function of the seed: the same arguments give the same bytes.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from xray_spark.dev.anatomy import Anatomy, Box, render
from xray_spark.labels import FINDINGS, NO_FINDING

METADATA_HEADER: tuple[str, ...] = (
    "Image Index",
    "Finding Labels",
    "Follow-up #",
    "Patient ID",
    "Patient Age",
    "Patient Gender",
    "View Position",
    "OriginalImage[Width",
    "Height]",
    "OriginalImagePixelSpacing[x",
    "y]",
)
BBOX_HEADER: tuple[str, ...] = ("Image Index", "Finding Label", "Bbox [x", "y", "w", "h]", "", "", "")
#: Findings that the real bounding-box file has boxes for.
BOXED_FINDINGS = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
)
BBOX_SPELLING = {"Infiltration": "Infiltrate"}

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


def plan_studies(n_images: int, seed: int, first_patient: int = 1) -> list[Study]:
    """Patients with 1-8 follow-ups each, numbered from ``first_patient``, until ``n_images`` studies."""
    rng = np.random.default_rng([seed, 0])
    studies: list[Study] = []
    patient = first_patient - 1
    while len(studies) < n_images:
        patient += 1
        n_follow = int(min(8, 1 + rng.poisson(1.6)))
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


def rendered(studies: Sequence[Study], size: int, seed: int) -> Iterator[tuple[Study, np.ndarray, dict[str, Box]]]:
    """Each study with its picture (uint8) and the unit-square box of each finding."""
    anatomies: dict[int, Anatomy] = {}
    for i, study in enumerate(studies):
        if study.patient_id not in anatomies:
            anatomies[study.patient_id] = Anatomy.draw(np.random.default_rng([seed, 1, study.patient_id]))
        rng = np.random.default_rng([seed, 2, i])
        pixels, boxes = render(study.findings, anatomies[study.patient_id], study.view, size, rng)
        yield study, pixels, boxes


def write_archive(
    output: str | Path, n_images: int, size: int, seed: int, *, first_patient: int = 1, progress: bool = False
) -> list[Study]:
    """Write the archive under ``output``; returns the studies written."""
    out = Path(output)
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    studies = plan_studies(n_images, seed, first_patient)
    spacing = pixel_spacing(size)
    with (
        open(out / "Data_Entry_2017.csv", "w", newline="", encoding="utf-8") as meta_file,
        open(out / "BBox_List_2017.csv", "w", newline="", encoding="utf-8") as box_file,
    ):
        meta = csv.writer(meta_file, lineterminator="\n")
        box = csv.writer(box_file, lineterminator="\n")
        meta.writerow(METADATA_HEADER)
        box.writerow(BBOX_HEADER)
        for i, (study, pixels, boxes) in enumerate(rendered(studies, size, seed)):
            cv2.imwrite(str(images / study.image_id), pixels)
            meta.writerow(
                [
                    study.image_id,
                    study.finding_labels,
                    study.follow_up,
                    study.patient_id,
                    study.age,
                    study.sex,
                    study.view,
                    size,
                    size,
                    spacing,
                    spacing,
                ]
            )
            for name in study.findings:
                if name in BOXED_FINDINGS:
                    x, y, w, h = (round(v * size, 3) for v in boxes[name])
                    box.writerow([study.image_id, BBOX_SPELLING.get(name, name), x, y, w, h])
            if progress and (i + 1) % 500 == 0:
                print(f"  synthesized {i + 1}/{len(studies)} images", file=sys.stderr)
    return studies


def _arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m xray_spark.dev.synthetic",
        description="Write a synthetic chest X-ray archive in the NIH ChestX-ray14 layout.",
    )
    parser.add_argument("--output", required=True, help="folder to write (created if missing)")
    parser.add_argument("--images", type=int, default=1500, help="number of images (default 1500)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--first-patient", type=int, default=1, help="first patient id (a later batch of an archive starts higher)"
    )
    parser.add_argument(
        "--format",
        choices=("nih", "dicom"),
        default="nih",
        help="nih: the NIH layout (CSV + PNG); dicom: a PACS export with identifying headers and a labels CSV",
    )
    parser.add_argument(
        "--labelled", type=float, default=0.5, help="dicom: share of the patients the labels CSV covers (default 0.5)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _arg_parser().parse_args(argv)
    if args.images <= 0 or args.size < 32 or not 1 <= args.first_patient < 90_000_000 or not 0 <= args.labelled <= 1:
        print(
            "error: --images must be positive, --size at least 32, --first-patient in [1, 9e7), --labelled in [0, 1]",
            file=sys.stderr,
        )
        return 2
    if args.format == "dicom":
        from xray_spark.dev.dicom_archive import write_dicom_archive

        films = write_dicom_archive(
            args.output,
            args.images,
            args.size,
            args.seed,
            first_patient=args.first_patient,
            labelled=args.labelled,
            progress=True,
        )
        studies = [study for study, _, _ in films]
    else:
        studies = write_archive(
            args.output, args.images, args.size, args.seed, first_patient=args.first_patient, progress=True
        )
    patients = len({s.patient_id for s in studies})
    normal = sum(1 for s in studies if not s.findings)
    print(
        f"wrote {len(studies)} {'DICOM films' if args.format == 'dicom' else 'images'} of {patients} patients "
        f"({normal} No Finding) at {args.size} px to {os.path.abspath(args.output)}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
