"""A new patient's earlier films, fetched from the archive on the night of their first film.

The thesis this product comes from wanted slow change across a patient's films caught; the
lake sees only films that reached it since the product was installed, while the patient's
earlier films are in the archive. Each night, for each patient of tonight's films in the spool
whose pseudonym the lake does not know yet (no earlier film in the lake), the archive is asked
for studies of ``dicomweb_source.modalities`` from ``priors.years`` before the patient's first
study tonight up to the day before it; their frontal chest films (``dicomweb_source.body_parts``
and ``views``, checked again on the retrieved header) are fetched, the newest first, at most
``priors.max_films`` a patient, into the spool, and recorded as priors (``priors.txt`` in the
spool). The night prepares and scores them like any film, writes them to ``xray.priors`` and
never delivers them back: the PACS has them. A night spends at most ``priors.max_seconds`` on it
and ``priors.max_patients`` patients; an archive that refuses the queries is one line and the
night goes on.

The archive is an :class:`Archive`: a DICOMweb service (QIDO-RS by Patient ID, WADO-RS; this
module) or a classic PACS (C-FIND, then C-MOVE to the node that writes the spool;
:mod:`xray_spark.node.query_retrieve`), ``priors.pacs`` picking the second.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import os
import time

from xray_spark.node.archives import Archive, ArchiveFailed, DicomWebArchive, date_of
from xray_spark.spool import Spool


@dataclasses.dataclass
class PriorsSummary:
    new_patients: int = 0
    asked: int = 0
    fetched: int = 0
    held: int = 0
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)
    failed: dict[str, int] = dataclasses.field(default_factory=dict)
    stopped: str = ""
    archive: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def new_patients(spool: Spool, key: bytes, known: set[str]) -> dict[str, dt.date]:
    """Patient ID -> the date of their first study tonight, for tonight's films (the spool's pending files) of
    patients whose pseudonym is not in ``known`` (the lake's)."""
    from pydicom import dcmread

    from xray_spark.privacy import pseudonym

    first: dict[str, dt.date] = {}
    for path in spool.pending():
        try:
            ds = dcmread(path, stop_before_pixels=True, specific_tags=["PatientID", "StudyDate"])
        except Exception:  # prepare quarantines what it cannot read, with the reason
            continue
        patient_id = str(ds.get("PatientID", "") or "").strip()
        day = date_of(str(ds.get("StudyDate", "") or "")) or dt.date.today()
        if patient_id and pseudonym(key, patient_id) not in known:
            first[patient_id] = min(day, first.get(patient_id, day))
    return first


def fetch_priors(
    limits, spool: Spool, known: set[str], key: bytes, archive: Archive, *, clock=time.monotonic, audit=None
) -> PriorsSummary:
    """Each new patient's earlier films into ``spool`` from ``archive`` (see the module's text); ``limits`` are the
    ``priors`` settings."""
    summary = PriorsSummary(archive=archive.name)
    patients = new_patients(spool, key, known)
    summary.new_patients = len(patients)
    skipped, failed = collections.Counter(), collections.Counter()
    deadline = clock() + limits.max_seconds
    tried: list[str] = []
    moved: set[tuple[str, str]] = set()
    try:
        for n, (patient_id, first) in enumerate(sorted(patients.items())):
            if n >= limits.max_patients or clock() > deadline:
                summary.stopped = "patients" if n >= limits.max_patients else "time"
                break
            summary.asked += 1
            since = first - dt.timedelta(days=round(365.25 * limits.years))
            films = archive.earlier_films(patient_id, since, first - dt.timedelta(days=1), skipped)
            for film in sorted(films, reverse=True)[: limits.max_films]:
                if clock() > deadline:
                    summary.stopped = "time"
                    break
                if spool.holds(film[3]):
                    summary.held += 1
                    continue
                tried.append(film[3])
                reason = archive.fetch(film, patient_id, spool)
                if reason is not None:
                    skipped[reason] += 1
                    continue
                summary.fetched += 1
                moved.add((patient_id, film[1]))
    except ArchiveFailed as exc:
        failed[str(exc)] += 1
    finally:
        archive.close()
        arrived = [uid for uid in tried if spool.holds(uid)]
        if arrived:
            spool.mark_priors(arrived)
        if audit is not None and (moved or failed):
            _audit(audit, archive.name, moved, bool(failed))
    summary.skipped, summary.failed = dict(skipped), dict(failed)
    return summary


def _audit(trail, name: str, moved: set[tuple[str, str]], failed: bool) -> None:
    """DICOM Instances Transferred from the archive into the spool, naming the patients and studies."""
    from xray_spark import audit

    archive = audit.Participant(name, False, "", audit.SOURCE)
    us = audit.Participant("xray-spark priors", True, "", audit.DESTINATION)
    subjects = [audit.patient(p) for p in sorted({p for p, _ in moved})]
    subjects += [audit.study(u) for u in sorted({u for _, u in moved})]
    outcome = audit.MINOR_FAILURE if failed else audit.SUCCESS
    trail.record(audit.INSTANCES_TRANSFERRED, "C", outcome, [us, archive], subjects)


def archive_of(settings) -> Archive | None:
    """The archive priors come from: ``priors.pacs`` by C-FIND and C-MOVE, else the DICOMweb source; None: neither."""
    if settings.priors.pacs:
        from xray_spark.node.query_retrieve import DimseArchive

        return DimseArchive.of(settings)
    if settings.dicomweb_source.url:
        return DicomWebArchive(settings.dicomweb_source)
    return None


def priors_into_spool(settings, folder: str) -> dict:
    """The nightly flow's step after the pull: ``{"priors": summary}``, or ``{}`` when it does not apply."""
    from xray_spark.audit import lake_patients
    from xray_spark.errors import UsageError
    from xray_spark.privacy import read_key
    from xray_spark.spool import open_spool

    wanted = settings.priors.enabled and settings.priors.max_films
    if not (folder and wanted and (settings.priors.pacs or settings.dicomweb_source.url)):
        return {}
    try:
        key = read_key(settings.privacy, settings.lake)
    except UsageError:
        return {}  # prepare says in one line that the DICOM source needs the key
    prefix = f"{settings.dataset}/"
    known = {k for k, who in lake_patients(settings.lake).items() if who.startswith(prefix)}
    from xray_spark.audit import trail

    spool = open_spool(folder, settings.lake)
    archive = archive_of(settings)
    if archive is None:
        return {}
    done = fetch_priors(settings.priors, spool, known, key, archive, audit=trail(settings)).to_dict()
    print(priors_summary_text(done), flush=True)
    return {"priors": done}


def priors_summary_text(summary: dict) -> str:
    line = (
        f"priors: {summary['new_patients']} new patients, {summary['asked']} asked for, "
        f"{summary['fetched']} earlier films fetched, {summary['held']} held already (from {summary['archive']})"
    )
    if summary["stopped"]:
        line += f" (stopped at priors.max_{'seconds' if summary['stopped'] == 'time' else 'patients'})"
    return "\n".join([line, *(f"  failed: {n} x {why}" for why, n in summary["failed"].items())])


def record_priors(spark, lake, settings, ingested: list[str], spool_root: str, run_id: str) -> int:
    """``xray.priors`` rows for tonight's ingested files that were fetched as priors; how many."""
    from pyspark.sql import functions as F

    from xray_spark.lake import tables

    priors = Spool(spool_root).priors()
    mine = sorted({os.path.basename(p)[: -len(".dcm")] for p in ingested} & priors)
    if not mine:
        return 0
    rows = spark.createDataFrame([(uid,) for uid in mine], "image_id string").select(
        "image_id",
        F.current_date().alias("fetched_on"),
        F.lit(run_id).alias("run_id"),
        F.lit(settings.dataset).alias("dataset"),
    )
    tables.write_table_partitioned(rows, lake, "priors")
    return len(mine)


def after_ingest(spark, lake, settings, files: list[str], spool_root: str) -> dict:
    """Once the night has prepared and scored the spool's files: tonight's priors recorded in ``xray.priors`` (before
    the worklist's patient pages, which mark them), the files marked ingested (or moved to ``done/``,
    ``dicom_node.after_ingest``)."""
    from xray_spark.lake import new_run_id

    priors = record_priors(spark, lake, settings, files, spool_root, new_run_id())
    after = settings.dicom_node.after_ingest
    done = Spool(os.path.abspath(spool_root)).mark_ingested(files, after)
    return {"ingested": done, "after_ingest": after, "priors": priors}
