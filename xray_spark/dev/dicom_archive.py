"""The synthetic archive as a hospital's PACS export: DICOM files with identifying headers.

::

    python -m xray_spark.dev.synthetic --format dicom --output DIR --images N --size PX --seed S

writes

* ``DIR/export/``: a DICOMDIR and its ``PTnnnnnn/STnnnnnn/SEnnnnnn/IMnnnnnn`` files (no
  suffixes), as removable media written by a PACS. The films are CR and DX objects in a
  mix of transfer syntaxes (mostly JPEG Lossless and JPEG 2000, some of every other one),
  8-bit and 12-bit, some MONOCHROME1, some with a window in the header; each carries a
  made-up name, birth date, address, telephone number, other patient ID, referring
  physician, operator and institution, so privacy can be tested end to end.
* ``DIR/export/OTHER/``: what else an export holds: a CT slice, a lateral chest film, an
  abdominal film, a structured report without pixel data and a file cut short; and
  ``DIR/export/README.TXT``, which is not DICOM.
* ``DIR/labels.csv``: ``Accession Number,Finding Labels`` (NIH spelling) for the films of
  about ``--labelled`` of the patients; the other films are unlabelled, as most of an
  archive is.

The pictures, findings and follow-ups are those of the NIH-layout archive with the same
seed. Everything is a function of the arguments: the same arguments give the same files.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import dcmread, uid
from pydicom.dataset import FileDataset
from pydicom.fileset import FileSet

from xray_spark.dev.dicom_films import SYNTAXES, encode, film
from xray_spark.dev.studies import Study, pixel_spacing, plan_studies, rendered

SURNAMES = ("Hartley", "Okafor", "Lindqvist", "Moreau", "Takahashi", "Brennan", "Castillo", "Novak")
GIVEN_NAMES = ("June", "Tomas", "Amara", "Felix", "Ines", "Gideon", "Marta", "Oren")
INSTITUTION = "Saint Elsewhere General Hospital"


def _mix(lossy_jpeg: str, implicit: float) -> dict[str, float]:
    """Transfer syntaxes with their shares: PACS mostly export lossless JPEG and JPEG 2000."""
    return {
        "jpeg-lossless": 4,
        "j2k-lossless": 3,
        "j2k": 1,
        lossy_jpeg: 1,
        "explicit-le": 1,
        "implicit-le": implicit,
        "explicit-be": 0.5,
        "deflated": 0.5,
        "rle": 1,
        "jpeg-ls": 1,
        "jpeg-ls-near": 0.5,
    }


#: The mix by bit depth: 8-bit films take baseline JPEG as their lossy JPEG, 12-bit ones JPEG Extended.
SYNTAX_MIX: dict[int, dict[str, float]] = {8: _mix("jpeg-baseline", 1), 12: _mix("jpeg-extended", 0.5)}
assert all(set(mix) <= set(SYNTAXES) for mix in SYNTAX_MIX.values())


def _code(n: int) -> str:
    """Six letters unique to ``n``: made-up identifiers that cannot occur by chance elsewhere."""
    letters = []
    for _ in range(6):
        n, r = divmod(n, 26)
        letters.append(chr(ord("a") + r))
    return "".join(letters).capitalize()


def identity(patient: int, seed: int) -> dict[str, str]:
    """The made-up identifying headers of one patient (all unique to the patient and the seed)."""
    n = seed * 1_000_003 + patient * 7919 + 12345
    code = _code(n)
    rng = np.random.default_rng([seed, 4, patient])
    return {
        "PatientID": f"MRN{n % 10**9:09d}",
        "PatientName": f"{SURNAMES[patient % 8]}^{GIVEN_NAMES[(patient // 8) % 8]}^{code}",
        "PatientAddress": f"{patient % 97 + 1} {code} Lane, Springfield",
        "PatientTelephoneNumbers": f"+1-555-{n % 10**7:07d}",
        "OtherPatientIDs": f"OLD-{code.upper()}",
        "ReferringPhysicianName": f"Referrer{code}^Ada",
        "OperatorsName": f"Operator{code}^Rowan",
        "InstitutionName": f"{INSTITUTION} {code}",
        "birth_offset_days": str(int(rng.integers(0, 365))),
    }


def study_moment(study: Study, seed: int) -> dt.datetime:
    """When a study was taken: each patient's first film in 2024-2025, follow-ups weeks apart."""
    rng = np.random.default_rng([seed, 5, study.patient_id])
    first = dt.datetime(2024, 1, 1, 7, 0) + dt.timedelta(days=int(rng.integers(0, 500)))
    gaps = rng.integers(20, 120, size=study.follow_up + 1)
    minutes = int(np.random.default_rng([seed, 6, study.patient_id, study.follow_up]).integers(0, 12 * 60))
    return first + dt.timedelta(days=int(gaps[: study.follow_up].sum()), minutes=minutes)


@dataclasses.dataclass(frozen=True)
class Acquisition:
    """The machine and export that write the films (the defaults: the archive's usual ones); another
    makes the drift a monitor must see: another vendor's contrast, another spacing, an export bug."""

    manufacturer: str = "xray-spark synthetic"
    model_name: str = "DR-1"
    contrast: float = 1.0  # the picture's contrast around mid-gray
    spacing_scale: float = 1.0  # the pixel spacing in the header, times this
    monochrome1_share: float = 0.15  # films written MONOCHROME1
    monochrome1_inverted: bool = False  # MONOCHROME1 said, MONOCHROME2 pixels written (the film reads inverted)


USUAL = Acquisition()


def headers(study: Study, index: int, seed: int) -> dict[str, Any]:
    """The header attributes of one film, identifying ones included."""
    person = identity(study.patient_id, seed)
    when = study_moment(study, seed)
    birthday = dt.date(when.year - study.age, when.month, min(when.day, 28))  # no 29 February in a year without one
    birth = birthday - dt.timedelta(days=int(person.pop("birth_offset_days")))
    attributes: dict[str, Any] = person | {
        "PatientBirthDate": birth.strftime("%Y%m%d"),
        "PatientSex": study.sex,
        "StudyDate": when.strftime("%Y%m%d"),
        "StudyTime": when.strftime("%H%M%S"),
        "ContentDate": when.strftime("%Y%m%d"),
        "StudyID": str(index + 1),
        "AccessionNumber": f"A{seed % 100:02d}{index + 1:07d}",
        "StudyDescription": f"XR CHEST {study.view}",
        "SeriesNumber": 1,
        "InstanceNumber": 1,
        "BodyPartExamined": "CHEST",
        "ViewPosition": study.view,
        "Manufacturer": "xray-spark synthetic",
        "StationName": "DXROOM2",
    }
    if index % 2:  # half the films say the age; for the others it comes from the birth date
        attributes["PatientAge"] = f"{study.age:03d}Y"
    return attributes


def _set_uids(ds: FileDataset, seed: int, index: int) -> None:
    """UIDs derived from the seed, so the same arguments give the same files."""
    study_key = [str(seed), str(index)]
    ds.StudyInstanceUID = uid.generate_uid(entropy_srcs=["study", *study_key])
    ds.SeriesInstanceUID = uid.generate_uid(entropy_srcs=["series", *study_key])
    ds.SOPInstanceUID = uid.generate_uid(entropy_srcs=["instance", *study_key])
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID


def dicom_film(
    study: Study, index: int, pixels: np.ndarray, size: int, seed: int, acquisition: Acquisition = USUAL
) -> tuple[FileDataset, str]:
    """One study as a CR/DX dataset and the transfer syntax to write it in."""
    rng = np.random.default_rng([seed, 7, index])
    if acquisition.contrast != 1.0:
        pixels = np.clip(127.5 + acquisition.contrast * (pixels.astype(np.float64) - 127.5), 0, 255).astype(np.uint8)
    bits = 12 if rng.random() < 0.5 else 8
    stored = pixels.astype(np.uint16) * 16 + (pixels >> 4) if bits == 12 else pixels
    top = (1 << bits) - 1
    photometric = "MONOCHROME1" if rng.random() < acquisition.monochrome1_share else "MONOCHROME2"
    if photometric == "MONOCHROME1" and not acquisition.monochrome1_inverted:
        stored = (top - stored).astype(stored.dtype)
    attributes = headers(study, index, seed) | {
        "Manufacturer": acquisition.manufacturer,
        "ManufacturerModelName": acquisition.model_name,
    }
    spacing = pixel_spacing(size) * acquisition.spacing_scale
    if bits == 12 and rng.random() < 0.5:  # a window over the full range, as a modality writes one
        attributes |= {"WindowCenter": top / 2 + 0.5, "WindowWidth": top + 1}
    modality = "CR" if rng.random() < 0.3 else "DX"
    spacing_key = "ImagerPixelSpacing" if modality == "DX" else "PixelSpacing"
    ds = film(stored, bits_stored=bits, photometric=photometric, modality=modality, **attributes)
    setattr(ds, spacing_key, [spacing, spacing])
    _set_uids(ds, seed, index)
    mix = SYNTAX_MIX[bits]
    weights = np.array(list(mix.values()))
    return ds, str(rng.choice(list(mix), p=weights / weights.sum()))


def _others(studies: Sequence[Study], size: int, seed: int) -> list[tuple[str, bytes]]:
    """What else an export holds besides frontal chest films (a few, always the same kinds)."""
    base = dict(headers(studies[0], len(studies), seed))
    flat = np.full((size, size), 40, dtype=np.uint8)
    flat[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 160
    files = []
    for k, (name, change) in enumerate(
        (
            ("CT0001", {"modality": "CT", "StudyDescription": "CT CHEST"}),
            ("LAT0001", {"ViewPosition": "LL", "StudyDescription": "XR CHEST LAT"}),
            ("ABD0001", {"BodyPartExamined": "ABDOMEN", "StudyDescription": "XR ABDOMEN AP"}),
        )
    ):
        attributes = base | change
        ds = film(flat, bits_stored=8, modality=attributes.pop("modality", "DX"), **attributes)
        _set_uids(ds, seed, len(studies) + k)
        files.append((name, encode(ds, "explicit-le")))
    report = film(flat, bits_stored=8, **base)
    _set_uids(report, seed, len(studies) + 3)
    report.SOPClassUID = report.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    report.Modality = "SR"
    del report.Rows, report.Columns, report.PixelData
    buffer = io.BytesIO()
    report.save_as(buffer, enforce_file_format=True)
    files.append(("SR0001", buffer.getvalue()))
    return files


def write_dicom_archive(
    output: str | Path,
    n_images: int,
    size: int,
    seed: int,
    *,
    first_patient: int = 1,
    labelled: float = 0.5,
    progress: bool = False,
    finding_contrast: float = 1.0,
    acquisition: Acquisition = USUAL,
    most_per_patient: int = 8,
) -> list[tuple[Study, FileDataset, str]]:
    """Write the export and the labels CSV under ``output``; returns (study, dataset, syntax) per film
    (``most_per_patient``: see :func:`~xray_spark.dev.studies.plan_studies`)."""
    out = Path(output)
    export = out / "export"
    export.mkdir(parents=True, exist_ok=True)
    studies = plan_studies(n_images, seed, first_patient, most_per_patient)
    fileset = FileSet()
    fileset.UID = uid.generate_uid(entropy_srcs=["fileset", str(seed), str(n_images), str(first_patient)])
    fileset.ID = "XRAYDEMO"
    films = []
    for i, (study, pixels, _) in enumerate(rendered(studies, size, seed, finding_contrast)):
        ds, syntax = dicom_film(study, i, pixels, size, seed, acquisition)
        fileset.add(dcmread(io.BytesIO(encode(ds, syntax))))  # staged by pydicom in a temporary folder
        films.append((study, ds, syntax))
        if progress and (i + 1) % 500 == 0:
            print(f"  encoded {i + 1}/{len(studies)} DICOM films", file=sys.stderr)
    fileset.write(export)
    other = export / "OTHER"
    other.mkdir(exist_ok=True)
    for name, data in _others(studies, size, seed):
        (other / name).write_bytes(data)
    first = min(export.glob("PT*/ST*/SE*/IM*"))
    (other / "CUT0001").write_bytes(first.read_bytes()[:400])  # a copy that stopped short
    (export / "README.TXT").write_text("Exported by the PACS. Open DICOMDIR with a DICOM viewer.\n")
    _write_labels(out / "labels.csv", films, seed, labelled)
    return films


def _write_labels(path: Path, films: Sequence[tuple[Study, FileDataset, str]], seed: int, share: float) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["Accession Number", "Finding Labels"])
        for study, ds, _ in films:
            if np.random.default_rng([seed, 3, study.patient_id]).random() < share:
                writer.writerow([ds.AccessionNumber, study.finding_labels])
