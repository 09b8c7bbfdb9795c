"""The bad-input corpus: every kind of bad or unusual input, made on the fly (nothing binary is checked in).

* image files: :func:`png_rgb`, :func:`png_16bit`, :func:`truncated_png`, :func:`huge_header_png` ...
* an archive holding all of them beside good images, with a metadata file that has every
  row-level fault: :func:`make_bad_archive` (quarantine reasons in :data:`EXPECTED_REASONS`);
* inputs that stop a job with one line: :func:`usage_cases` (wrong headers, missing
  columns, missing or corrupt models, bad ``--set`` overrides).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
from pydicom import dcmread

from xray_spark.dev.synthetic import METADATA_HEADER


def encode_png(image: np.ndarray) -> bytes:
    """Lossless PNG bytes of an image."""
    ok, buffer = cv2.imencode(".png", image)
    assert ok, f"could not encode an image of shape {image.shape} and dtype {image.dtype}"
    return buffer.tobytes()


def chest_like(size: int = 80, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    base = 200 * np.exp(-((x - 0.5) ** 2 + (y - 0.5) ** 2) / 0.08) + rng.normal(0, 8, (size, size))
    return np.clip(base, 0, 255).astype(np.uint8)


def png_gray8(size: int = 80, seed: int = 0) -> bytes:
    return encode_png(chest_like(size, seed))


def png_rgb(size: int = 80) -> bytes:
    gray = chest_like(size, 1)
    return encode_png(np.dstack([gray, gray, gray]))


def png_rgba(size: int = 80) -> bytes:
    gray = chest_like(size, 2)
    return encode_png(np.dstack([gray, gray, gray, np.full_like(gray, 255)]))


def png_16bit(size: int = 80) -> bytes:
    """A 12-bit radiograph stored in 16 bits (values 0..4095), as hospital exports often are."""
    return encode_png(chest_like(size, 3).astype(np.uint16) * 16)


def jpeg(size: int = 80) -> bytes:
    ok, buf = cv2.imencode(".jpg", chest_like(size, 4))
    assert ok
    return buf.tobytes()


def truncated_png(size: int = 80) -> bytes:
    data = png_gray8(size, 5)
    return data[: len(data) // 2]


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def huge_header_png(width: int = 60_000, height: int = 60_000) -> bytes:
    """A well-formed small PNG whose IHDR claims ``width`` x ``height`` pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


TEXT_AS_PNG = b"this is a text file that someone named .png\n"
#: A non-image whose first bytes a quarantine message must never repeat.
SECRET_AS_PNG = b"PatientName=DOE^JANE;BirthDate=19470203 and more text named .png\n"


def png_rgba16_bomb(side: int = 10_000) -> bytes:
    """A small, valid 16-bit RGBA PNG of ``side`` x ``side`` (one flat colour): it decodes to 8 x side^2 bytes."""
    row = b"\x00" + b"\x00" * (side * 8)
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 16, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def dicom_multiframe(frames: int = 120, side: int = 1024) -> bytes:
    """A header-valid DICOM of ``frames`` x ``side`` x ``side`` 16-bit frames, without the pixel data.

    The decoder must refuse it from the header alone (frames x rows x columns x 2 bytes).
    """

    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = FileDataset("x.dcm", {}, file_meta=meta, preamble=b"\x00" * 128)
    ds.Rows = ds.Columns = side
    ds.NumberOfFrames = frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = b"\x00\x00" * 16  # the header claims far more: never read
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def dicom_deflate_bomb(inflated: int = 200 << 20) -> bytes:
    """A Deflated Explicit VR Little Endian film of 64 x 64 whose dataset inflates to ``inflated`` bytes
    (its pixel data element is that long, all zeros): under 1 MiB on disk."""
    from pydicom import dcmread
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import DeflatedExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = FileDataset("x.dcm", {}, file_meta=meta, preamble=b"\x00" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows = ds.Columns = 64
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    raw = buffer.getvalue()
    offset = 132 + 12 + int(dcmread(io.BytesIO(raw), stop_before_pixels=True).file_meta.FileMetaInformationGroupLength)
    body = zlib.decompress(raw[offset:], -zlib.MAX_WBITS)
    deflater = zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS)
    out = [deflater.compress(body + struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, inflated))]
    zeros = bytes(1 << 20)
    out += [deflater.compress(zeros) for _ in range(inflated >> 20)]
    return raw[:offset] + b"".join(out) + deflater.flush()


# -- an archive with every row-level fault ------------------------------------------------------
GOOD = {
    "00000001_000.png": png_gray8(80, 0),
    "00000001_001.png": png_gray8(80, 7),
    "00000002_000.png": png_rgb(80),
    "00000003_000.png": png_rgba(80),
    "00000004_000.png": png_16bit(80),
    "00000005_000.png": jpeg(80),
    "00000006_000.png": png_gray8(80, 8),
    "00000007_000.png": png_gray8(80, 9),
    "00000008_000.png": png_gray8(80, 10),
    '00000009_000"q.png': png_gray8(80, 18),  # a quote in its name: "00000009_000""q.png" in the CSV (RFC 4180)
}
#: A file whose name is not UTF-8 (it has no metadata row: the orphan list names it by its bytes).
NON_UTF8_NAME = b"00000098_000\xff.png"
BAD_FILES = {
    "00000010_000.png": (b"", "empty_file"),
    "00000011_000.png": (truncated_png(), "truncated_image"),
    "00000012_000.png": (TEXT_AS_PNG, "undecodable_image"),
    "00000013_000.png": (huge_header_png(), "image_too_large"),
    "00000014_000.png": (png_rgba16_bomb(), "image_too_large"),
    "00000015_000.png": (encode_png(np.full((1, 1), 128, np.uint8)), "image_too_small"),
    "00000016_000.png": (encode_png(np.zeros((80, 80), np.uint8)), "blank_image"),
    "00000017_000.png": (SECRET_AS_PNG, "undecodable_image"),
    "00000018_000.png": (dicom_multiframe(), "image_too_large"),
    "00000019_000.png": (dicom_deflate_bomb(), "image_too_large"),  # 0.2 MiB that inflates to 200 MiB
}
#: Paths that are not regular files: a FIFO and a link to a device (made by make_bad_archive).
SPECIAL_FILES = {"00000040_000.png": "not_a_regular_file", "00000041_000.png": "not_a_regular_file"}


def metadata_row(name: str, labels: str = "No Finding", age: str = "45", pid: str | None = None) -> list[str]:
    pid = pid if pid is not None else str(int(name[:8]))
    follow_up = str(int(name[9:12])) if name[8:9] == "_" else "0"
    return [name, labels, follow_up, pid, age, "F", "PA", "80", "80", "0.143", "0.143"]


def _csv_cell(value: str) -> str:
    """A CSV cell as RFC 4180 writes it: quoted, with ``""`` for ``"``, when it holds a quote or a comma."""
    return '"' + value.replace('"', '""') + '"' if '"' in value or "," in value else value


def make_bad_archive(root: Path) -> Path:
    """An NIH-layout archive where every kind of bad input sits beside good images."""
    images = root / "images" / "images_001" / "images"  # nested like the NIH release
    images.mkdir(parents=True)
    for name, data in {**GOOD, **{k: v[0] for k, v in BAD_FILES.items()}}.items():
        (images / name).write_bytes(data)
    (images / "00000099_000.png").write_bytes(png_gray8(80, 11))  # a file with no metadata row
    with open(os.path.join(os.fsencode(images), NON_UTF8_NAME), "wb") as fh:
        fh.write(png_gray8(80, 19))
    (images / "00000020_000.png").write_bytes(png_gray8(80, 12))
    (images / "00000021_000.png").write_bytes(png_gray8(80, 13))
    (images / "00000022_000.png").write_bytes(png_gray8(80, 14))
    (images / "00000023_000.png").write_bytes(png_gray8(80, 15))
    os.symlink("..", images / "loop")  # a symlink loop in the images folder
    os.mkfifo(images / "00000040_000.png")  # a FIFO: reading it would wait for a writer forever
    os.symlink("/dev/zero", images / "00000041_000.png")  # a device: endless bytes
    rows = [metadata_row(n, "Effusion|Mass" if n.endswith("6_000.png") else "No Finding") for n in GOOD]
    rows += [metadata_row(n) for n in [*BAD_FILES, *SPECIAL_FILES]]
    rows += [
        metadata_row("00000020_000.png", "Mass|Tumour"),  # unknown finding
        metadata_row("00000001_000.png", "Nodule"),  # duplicate image id
        metadata_row("00000021_000.png", age="abc"),  # unparseable age
        metadata_row("../../etc/passwd.png", pid="9"),  # tries to leave the images folder
        metadata_row("00000022_000.png", pid="P22"),  # bad patient id
        metadata_row("00000030_000.png", "Nodule"),  # valid row, no file: reported, not quarantined
        metadata_row("00000024_000.png", "No Finding|Effusion"),  # contradictory labels
    ]
    (images / "00000024_000.png").write_bytes(png_gray8(80, 16))
    (images / "00000025_000.png").write_bytes(png_gray8(80, 17))
    lines = [",".join(METADATA_HEADER).encode()] + [",".join(_csv_cell(c) for c in r).encode() for r in rows]
    # A non-UTF-8 byte in a label is an unknown finding, not a crash.
    lines.append(b"00000023_000.png,Effus\xefon,0,23,50,M,AP,80,80,0.143,0.143")
    # A quoted field with a line break in it: one row, quarantined whole (not split in two).
    lines.append(b'00000025_000.png,Effusion,0,25,50,M,"P\r\nA",80,80,0.143,0.143')
    (root / "Data_Entry_2017.csv").write_bytes(b"\r\n".join(lines) + b"\r\n")  # Windows line endings
    return root


EXPECTED_REASONS = {
    "empty_file": ["00000010_000.png"],
    "truncated_image": ["00000011_000.png"],
    "undecodable_image": ["00000012_000.png", "00000017_000.png"],
    "image_too_large": ["00000013_000.png", "00000014_000.png", "00000018_000.png", "00000019_000.png"],
    "image_too_small": ["00000015_000.png"],
    "blank_image": ["00000016_000.png"],
    "not_a_regular_file": ["00000040_000.png", "00000041_000.png"],
    "contradictory_labels": ["00000024_000.png"],
    "line_break_in_field": ["00000025_000.png"],
    "unknown_finding": ["00000020_000.png", "00000023_000.png"],
    "duplicate_image_id": ["00000001_000.png"],
    "bad_age": ["00000021_000.png"],
    "unsafe_image_name": ["../../etc/passwd.png"],
    "bad_patient_id": ["00000022_000.png"],
}


# -- inputs that stop a job with one clear line ------------------------------------------------
def usage_cases(root: Path, model_dir: str) -> dict[str, tuple[str, list[str], list[str]]]:
    """``{case: (job, arguments, what the one error line must say)}``, with the files written under ``root``.

    ``model_dir`` is a trained model's folder; the model cases break copies of it.
    """
    root.mkdir(parents=True, exist_ok=True)
    images = root / "images"
    images.mkdir(exist_ok=True)

    def csv_file(name: str, header: list[str]) -> str:
        path = root / name
        path.write_text(",".join(header) + "\n" + ",".join(metadata_row("00000001_000.png")[: len(header)]) + "\n")
        return str(path)

    renamed = list(METADATA_HEADER)
    renamed[1] = "Diagnosis"
    missing_age = METADATA_HEADER[:4] + METADATA_HEADER[5:]
    no_model_file = root / "model-without-file"
    shutil.copytree(model_dir, no_model_file)
    os.remove(no_model_file / "model.keras")
    corrupt = root / "model-corrupt"
    shutil.copytree(model_dir, corrupt)
    (corrupt / "model.keras").write_bytes(b"this is not a model")
    h5_model = root / "model-h5"  # model.json names an HDF5 file: loading it could run a Lambda's code
    shutil.copytree(model_dir, h5_model)
    os.rename(h5_model / "model.keras", h5_model / "model.h5")
    meta = json.loads((h5_model / "model.json").read_text())
    (h5_model / "model.json").write_text(json.dumps(meta | {"model_file": "model.h5"}))
    registered_lake = root / "registered-lake"  # a lake whose xray.models holds the trained model
    shutil.copytree(Path(model_dir).parents[1] / "tables" / "models", registered_lake / "tables" / "models")
    tampered = root / "model-tampered"  # the thresholds edited after training
    shutil.copytree(model_dir, tampered)
    meta = json.loads((tampered / "model.json").read_text())
    meta["thresholds"] = {k: 0.0 for k in meta["thresholds"]}
    (tampered / "model.json").write_text(json.dumps(meta))
    prepare = ["--lake", str(root / "lake"), "--images", str(images)]
    score = ["--lake", str(root / "lake")]
    return {
        "metadata-missing": ("prepare", [*prepare, "--metadata", str(root / "nope.csv")], ["nope.csv does not exist"]),
        "metadata-wrong-header": (
            "prepare",
            [*prepare, "--metadata", csv_file("renamed.csv", renamed)],
            ["renamed.csv", "column 2 is 'Diagnosis', expected 'findinglabels'"],
        ),
        "metadata-missing-column": (
            "prepare",
            [*prepare, "--metadata", csv_file("no-age.csv", missing_age)],
            ["no-age.csv", "missing patientage"],
        ),
        "metadata-not-nih": (
            "prepare",
            [*prepare, "--metadata", csv_file("other.csv", ["id", "label"])],
            ["other.csv has 2 columns", "the NIH format has 11"],
        ),
        "set-unknown-key": (
            "prepare",
            [*prepare, "--metadata", "x.csv", "--set", "image.sise=3"],
            ["unknown configuration key 'image.sise'", "image.size"],
        ),
        "set-wrong-type": (
            "prepare",
            [*prepare, "--metadata", "x.csv", "--set", "image.size=big"],
            ["'image.size'", "must be an integer"],
        ),
        "model-file-missing": (
            "score",
            [*score, "--model", str(no_model_file)],
            ["model-without-file", "model.keras is missing"],
        ),
        "model-file-corrupt": (
            "score",
            [*score, "--model", str(corrupt)],
            ["model-corrupt", "model.keras cannot be loaded"],
        ),
        "model-file-h5": ("score", [*score, "--model", str(h5_model)], ["model.h5 is a HDF5 file", "run Python"]),
        "model-json-tampered": (
            "score",
            ["--lake", str(registered_lake), "--model", str(tampered)],
            ["model.json of model", "does not match the SHA-256 recorded"],
        ),
        "sql-insert": (
            "sql",
            [*score, "INSERT INTO xray.predictions SELECT * FROM xray.predictions"],
            ["refused: InsertIntoStatement is not a read-only statement"],
        ),
        "sql-insert-overwrite-directory": (
            "sql",
            [*score, f"INSERT OVERWRITE DIRECTORY '{root / 'lake' / 'tables' / 'predictions'}' USING parquet SELECT 1"],
            ["refused: InsertIntoDir is not a read-only statement"],
        ),
    }


#: The pseudonym key of the DICOM tests (long enough, never a real one).
DICOM_KEY = "a-test-key-of-32-characters-long"
#: A unique string planted in every identifying header field: none may reach the lake or the output.
PHI = {
    "PatientName": "ZZNAME^SECRET",
    "PatientBirthDate": "19410203",
    "PatientAddress": "ZZADDRESS 1 Secret Street",
    "PatientTelephoneNumbers": "ZZPHONE5550100",
    "OtherPatientIDs": "ZZOTHERID",
    "ReferringPhysicianName": "ZZREFERRER^DOC",
    "OperatorsName": "ZZOPERATOR",
    "InstitutionName": "ZZINSTITUTION",
}


#: The identifying header fields the archive fills with made-up values; none may leave the headers.
IDENTIFYING = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "OtherPatientIDs",
    "ReferringPhysicianName",
    "OperatorsName",
    "InstitutionName",
)


def headers_of(folder: Path) -> dict[Path, object]:
    """Every DICOM file under ``folder`` (DICOMDIR included), read up to the pixel data."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.read_bytes()[128:132] == b"DICM":
            try:
                out[path] = dcmread(path, stop_before_pixels=True)
            except Exception:  # the file cut short on purpose
                continue
    return out


def planted_identity(export: Path) -> set[str]:
    """Every identifying value written into the export's headers, and the birth dates as ISO dates too."""
    values = set()
    for ds in headers_of(export).values():
        datasets = [ds, *ds.get("DirectoryRecordSequence", [])]
        for item in datasets:
            for keyword in IDENTIFYING:
                value = str(item.get(keyword, "") or "")
                if value:
                    values.add(value)
                    if keyword == "PatientBirthDate":
                        values.add(dt.datetime.strptime(value, "%Y%m%d").date().isoformat())
                    if keyword == "PatientName":
                        values.update(part for part in value.split("^") if len(part) >= 6)
    return values
