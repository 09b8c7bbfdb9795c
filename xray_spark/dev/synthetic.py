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
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2

from xray_spark.dev.studies import Study, pixel_spacing, plan_studies, rendered

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
