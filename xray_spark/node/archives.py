"""Where a new patient's earlier films are fetched from (:mod:`xray_spark.node.priors`): an :class:`Archive`.

Two today: a DICOMweb service (:class:`DicomWebArchive`: QIDO-RS by Patient ID, WADO-RS) and a
classic PACS (:class:`xray_spark.node.query_retrieve.DimseArchive`: C-FIND, then C-MOVE to the
node that writes the spool). Another kind is one class with these three methods and one line in
:func:`xray_spark.node.priors.archive_of`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections import Counter
from collections.abc import Iterator
from typing import Protocol

from xray_spark.node.pull import (
    BODY_PART,
    MODALITY,
    STUDY_UID,
    VIEW,
    StuckPaging,
    _retrieved,
    _value,
    header_why_not,
    series_instances,
    series_search,
    session_of,
    why_not,
)
from xray_spark.spool import Spool

STUDY_DATE = "00080020"


def date_of(text: str) -> dt.date | None:
    """A DICOM date (``YYYYMMDD``), or None."""
    try:
        return dt.datetime.strptime(text[:8], "%Y%m%d").date()
    except ValueError:
        return None


class ArchiveFailed(Exception):
    """The archive cannot answer (refused, unreachable, a failed query): the night's priors stop, with this reason."""


#: An earlier film as an archive lists it: (study date, Study, Series and SOP Instance UIDs).
Film = tuple[dt.date, str, str, str]


class Archive(Protocol):
    """Where a patient's earlier films are: listed by patient and dates, fetched one at a time into the spool."""

    name: str

    def earlier_films(self, patient_id: str, since: dt.date, until: dt.date, skipped: Counter) -> list[Film]:
        """The patient's frontal chest films with study dates from ``since`` to ``until``; the others counted in
        ``skipped`` by reason. Raises :class:`ArchiveFailed`."""
        ...

    def fetch(self, film: Film, patient_id: str, spool: Spool) -> str | None:
        """Bring ``film`` into ``spool``: None when it is there and is the patient's frontal chest film, else why not
        (a film that reached the spool all the same is recorded as a prior too). Raises :class:`ArchiveFailed`."""
        ...

    def close(self) -> None: ...


class DicomWebArchive:
    """The DICOMweb source's archive: QIDO-RS series by Patient ID, their instances, WADO-RS of each film."""

    def __init__(self, source) -> None:
        self.source = source
        self.name = source.url.rstrip("/")
        self.session, self.client = session_of(source)

    @contextlib.contextmanager
    def _answering(self) -> Iterator[None]:
        import requests

        try:
            yield
        except StuckPaging as exc:
            raise ArchiveFailed(str(exc)) from None
        except requests.HTTPError as exc:
            raise ArchiveFailed(f"HTTP {getattr(exc.response, 'status_code', 0)} from {self.source.url}") from None
        except requests.RequestException as exc:
            raise ArchiveFailed(f"cannot reach {self.source.url} ({type(exc).__name__})") from None

    def earlier_films(self, patient_id: str, since: dt.date, until: dt.date, skipped: Counter) -> list[Film]:
        found: dict[str, Film] = {}
        with self._answering():
            for modality in dict.fromkeys(m.upper() for m in self.source.modalities):
                query = {"PatientID": patient_id, "Modality": modality}
                for series in series_search(self.client, query, since, until):
                    study_uid, series_uid = _value(series, STUDY_UID), _value(series, "0020000E")
                    for item in series_instances(self.client, series):
                        said = (_value(item, MODALITY) or modality, _value(item, BODY_PART), _value(item, VIEW))
                        reason = why_not(self.source, *said)
                        if reason is not None:
                            skipped[reason] += 1
                            continue
                        day = date_of(_value(item, STUDY_DATE) or _value(series, STUDY_DATE)) or since
                        sop = _value(item, "00080018")
                        found[sop] = (day, study_uid, series_uid, sop)
        return list(found.values())

    def fetch(self, film: Film, patient_id: str, spool: Spool) -> str | None:
        with self._answering():
            data, dataset = _retrieved(self.client, *film[1:])
        reason = header_why_not(self.source, dataset)
        if reason is not None or str(dataset.get("PatientID", "")).strip() != patient_id:
            return reason or "another patient's film"
        spool.store(str(dataset.SOPInstanceUID), data)
        return None

    def close(self) -> None:
        self.session.close()
