"""Patient privacy for DICOM archives: keyed pseudonyms, and the header fields that may be kept.

A DICOM header names the patient, their birth date, address and telephone, other patient
IDs, the physicians, the operators and the institution. None of that leaves the executor
that reads the header: :data:`KEPT` is the whole list of what the pipeline may keep, the
Patient ID becomes :func:`pseudonym` (HMAC-SHA256 under a secret key that never enters the
lake, the configuration or a log), and the age is computed there from the birth date
when Patient's Age is missing, the birth date itself discarded.

Kept on purpose, because the worklist must lead a radiologist back to the study in the
PACS: the Study, Series and SOP Instance UIDs and the Accession Number. They identify a
study to whoever can query the PACS: the lake is for the people allowed to see that.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import os
import re
import stat
from collections.abc import Iterable, Sequence

from xray_spark.config import PrivacySettings
from xray_spark.errors import UsageError
from xray_spark.lake import Lake, is_inside

#: The header attributes the pipeline keeps (by pydicom keyword); everything else is dropped.
KEPT = (
    "SOPInstanceUID",
    "SOPClassUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "AccessionNumber",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ViewPosition",
    "Modality",
    "BodyPartExamined",
    "Rows",
    "Columns",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "PhotometricInterpretation",
    "BitsStored",
    "Manufacturer",
    "ManufacturerModelName",
    "NumberOfFrames",
)
#: Identifying attributes read only to derive a kept value, never kept themselves: by pydicom keyword, what from.
DERIVED_FROM = {
    "PatientID": "patient_pseudonym (its keyed pseudonym)",
    "PatientAge": "age",
    "PatientBirthDate": "age, when Patient's Age is missing (the date itself discarded)",
}
MIN_KEY_BYTES = 16


class KeptHeader:
    """A DICOM header as the pipeline may read it: the attributes of :data:`KEPT`, nothing else.

    Reading any other attribute raises, so a new column taken from a header cannot bypass
    the list: the list is the code's, not only the documentation's. The values of
    :data:`DERIVED_FROM` are read from the dataset itself, by :func:`derived_values`.
    """

    def __init__(self, ds: object, transfer_syntax: str | None = None) -> None:
        get = ds.get  # type: ignore[attr-defined]
        self._values = {kw: get(kw) for kw in KEPT if get(kw) is not None}
        self.transfer_syntax = transfer_syntax

    def _check(self, keyword: str) -> None:
        if keyword not in KEPT:
            raise KeyError(f"{keyword} is not in privacy.KEPT: the pipeline may not read it from a header")

    def get(self, keyword: str, default: object = None) -> object:
        self._check(keyword)
        return self._values.get(keyword, default)

    def __contains__(self, keyword: str) -> bool:
        self._check(keyword)
        return keyword in self._values

    def __getattr__(self, keyword: str) -> object:
        if keyword.startswith("_"):
            raise AttributeError(keyword)
        self._check(keyword)
        if keyword not in self._values:
            raise AttributeError(keyword)
        return self._values[keyword]


def derived_values(ds: object, key: bytes) -> dict[str, object]:
    """The values kept in place of :data:`DERIVED_FROM`'s attributes: the patient's pseudonym and age."""
    get = ds.get  # type: ignore[attr-defined]
    patient_id = str(get("PatientID", "") or "")
    return {
        "patient_pseudonym": pseudonym(key, patient_id) if patient_id.strip() else None,
        "age": age_in_years(get("PatientAge"), get("PatientBirthDate"), get("StudyDate")),
    }


log = logging.getLogger(__name__)


def read_key(settings: PrivacySettings, lake_root: str | None = None) -> bytes:
    """The pseudonym key: from ``privacy.key_env``, else ``privacy.key_file``; a clear error without one.

    A key file inside the lake (``lake_root``, when local) is refused: whoever reads the lake
    could then turn the pseudonyms back into Patient IDs.
    """
    value = os.environ.get(settings.key_env, "") if settings.key_env else ""
    source = f"the environment variable {settings.key_env}"
    if not value and settings.key_file:
        if lake_root and is_inside(settings.key_file, lake_root):
            raise UsageError(
                f"the pseudonym key file {settings.key_file} is inside the lake: keep it outside, where "
                "readers of the lake cannot reach it"
            )
        _check_key_mode(settings.key_file)
        try:
            with open(settings.key_file, "rb") as fh:
                value = fh.read().strip().decode("utf-8", errors="strict")
        except (OSError, UnicodeDecodeError) as exc:
            what = f"the pseudonym key file {settings.key_file} cannot be read ({type(exc).__name__})"
            raise UsageError(what) from None
        source = f"the file {settings.key_file}"
    if not value:
        raise UsageError(
            f"DICOM archives need a secret key for the patient pseudonyms: set {settings.key_env} "
            "(e.g. export XRAY_SPARK_PSEUDONYM_KEY=$(openssl rand -hex 32)) or privacy.key_file=PATH "
            "outside the lake, and keep it: the same key gives the same pseudonyms on every run"
        )
    key = value.encode("utf-8")
    if len(key) < MIN_KEY_BYTES:
        raise UsageError(f"the pseudonym key from {source} is shorter than {MIN_KEY_BYTES} bytes: use a longer one")
    return key


def key_for_lake(settings: PrivacySettings, lake: Lake) -> bytes:
    """The pseudonym key for a run on ``lake``: :func:`read_key` with the lake's local root. The one check, run
    both before Spark starts (the jobs) and inside the run, so a key file inside the lake fails the first."""
    return read_key(settings, lake.root if lake.is_local else None)


def _check_key_mode(path: str) -> None:
    """A key file every user can read is refused; one its group can read is warned about.

    Refused rather than warned about: Patient IDs are short, so whoever holds the key can
    compute the pseudonym of every possible ID and undo them all (ssh refuses such private keys too).
    """
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # the open below says why it cannot be read
    if mode & stat.S_IROTH:
        raise UsageError(
            f"the pseudonym key file {path} can be read by every user of this machine (mode "
            f"{stat.filemode(mode)}): chmod 600 it (whoever reads the key can undo the pseudonyms)"
        )
    if mode & stat.S_IRGRP:
        log.warning("the pseudonym key file %s can be read by its group (%s): chmod 600 it", path, stat.filemode(mode))


def key_fingerprint(key: bytes) -> str:
    """What the lake records of the key: a keyed hash of a constant, which tells keys apart and reveals none."""
    return hmac.new(key, b"xray-spark pseudonym key fingerprint", hashlib.sha256).hexdigest()[:16]


def check_same_key(fingerprint: str, recorded: str | None, dataset: str) -> None:
    """A store pseudonymised under one key takes no run under another (returning patients would get new ids)."""
    if recorded and recorded != fingerprint:
        raise UsageError(
            f"store {dataset!r} was pseudonymised with another key (fingerprint {recorded}, this run's {fingerprint}): "
            "use the key of its earlier runs; under a new key returning patients would get new patient ids"
        )


def source_ref(key: bytes, path: str) -> str:
    """What the lake calls a delivered file or folder: a keyed hash of its path, never the path.

    The identity map (:func:`write_identity_map`, outside the lake) turns it back into the path.
    """
    raw = os.fsencode(path)  # bytes as the file system gave them, whatever their encoding
    return "src-" + hmac.new(key, b"source path:" + raw, hashlib.sha256).hexdigest()[:24]


def write_identity_map(
    settings: PrivacySettings, lake_root: str | None, dataset: str, run_id: str, rows: list[tuple[str, str]]
) -> str:
    """``<privacy.identity_dir>/<dataset>/<run_id>.csv``: (reference, path) of each file, readable by its owner only."""
    folder = _identity_folder(settings, lake_root, dataset)
    return _write_private_csv(os.path.join(folder, f"{run_id}.csv"), ("source_ref", "path"), rows)


FILM_MAP_FOLDER = "films"
FILM_MAP_COLUMNS = ("sop_uid", "path", "pixel_sha256")


def _identity_folder(settings: PrivacySettings, lake_root: str | None, *parts: str) -> str:
    """``privacy.identity_dir/<parts>``, made readable by its owner only; refused inside the lake."""
    if lake_root and is_inside(settings.identity_dir, lake_root):
        raise UsageError(
            f"privacy.identity_dir {settings.identity_dir} is inside the lake: the identity map names the "
            "delivered files (PACS exports name folders after patients); keep it outside the lake"
        )
    folder = os.path.join(settings.identity_dir, *parts)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    return folder


def write_film_map(
    settings: PrivacySettings, lake_root: str | None, dataset: str, run_id: str, rows: Iterable[tuple[str, str, str]]
) -> str:
    """``<identity_dir>/<dataset>/films/<run_id>.csv``: each stored film's SOP Instance UID, its source file and
    the SHA-256 of its Pixel Data as read at ingest. Delivery (``deliver``) finds the file there, checks it is
    still the film that was scored, and copies the patient and study from it: the one place identity is re-joined.
    """
    folder = _identity_folder(settings, lake_root, dataset, FILM_MAP_FOLDER)
    return _write_private_csv(os.path.join(folder, f"{run_id}.csv"), FILM_MAP_COLUMNS, rows)


def read_film_map(settings: PrivacySettings, dataset: str) -> dict[str, tuple[str, str]]:
    """SOP Instance UID -> (source file, pixel SHA-256) over every run of ``dataset``; a later run wins."""
    import csv

    folder = os.path.join(settings.identity_dir, dataset, FILM_MAP_FOLDER)
    found: dict[str, tuple[str, str]] = {}
    if not os.path.isdir(folder):
        return found
    for name in sorted(n for n in os.listdir(folder) if n.endswith(".csv")):  # run ids sort by time
        with open(os.path.join(folder, name), encoding="utf-8", errors="surrogateescape", newline="") as fh:
            for row in csv.DictReader(fh):
                found[row["sop_uid"]] = (row["path"], row["pixel_sha256"])
    return found


def _write_private_csv(path: str, header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A CSV readable by its owner only (mode 600), the paths' bytes kept as the file system gave them."""
    import csv

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def pseudonym(key: bytes, patient_id: str) -> str:
    """The patient's keyed pseudonym: HMAC-SHA256 of the Patient ID, hex (the same for the same key)."""
    return hmac.new(key, patient_id.strip().encode("utf-8"), hashlib.sha256).hexdigest()


_AGE = re.compile(r"^(\d{3})([DWMY])$")


def age_in_years(patient_age: str | None, birth_date: str | None, study_date: str | None) -> int | None:
    """Age in whole years from Patient's Age (``058Y``, ``006M``), else from the birth and study dates."""
    match = _AGE.match((patient_age or "").strip().upper())
    if match:
        n, unit = int(match.group(1)), match.group(2)
        return {"Y": n, "M": n // 12, "W": n // 52, "D": n // 365}[unit]
    born, studied = _date(birth_date), _date(study_date)
    if born is None or studied is None or studied < born:
        return None
    return studied.year - born.year - ((studied.month, studied.day) < (born.month, born.day))


def _date(text: str | None) -> dt.date | None:
    try:
        return dt.datetime.strptime((text or "").strip()[:8], "%Y%m%d").date()
    except ValueError:
        return None
