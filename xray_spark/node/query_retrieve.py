"""A classic PACS as the archive of a new patient's earlier films: C-FIND finds them, C-MOVE sends them to the node.

``priors.pacs`` names the PACS (``AE_TITLE@HOST:PORT``, or ``tls:...`` over TLS with the
``deliver.tls_*`` files). One association (Study Root Query/Retrieve, FIND and MOVE) per night,
calling as ``dicom_node.ae_title``: studies of the patient in the dates asked (C-FIND, STUDY
level), their series (SERIES level, by Modality), each series' images with View Position and
Body Part Examined (IMAGE level), kept as the DICOMweb route keeps them
(:func:`xray_spark.node.pull.why_not`). Each film is then moved (C-MOVE, IMAGE level) to
``dicom_node.ae_title``: the PACS opens its own association to the node, which writes the film
into its spool as any film a PACS sends; a move is done when its final status says so, and the
film is checked again there (its header, its patient). The PACS must know the node's AE title
and address (its move destinations), and the node must allow the PACS (``dicom_node.allow``).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections import Counter

from xray_spark.destinations import Destination, parse_destination
from xray_spark.node.archives import ArchiveFailed, Film, date_of
from xray_spark.node.pull import header_why_not, why_not
from xray_spark.spool import Spool
from xray_spark.uids import requesting_ae

STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
#: C-FIND and C-MOVE statuses (PS3.4 C.4): results or sub-operations still coming, and the final success.
PENDING, SUCCESS = {0xFF00, 0xFF01}, 0x0000
#: The C-MOVE failure that no later film escapes: the PACS does not know the move destination.
UNKNOWN_DESTINATION = 0xA801


def _text(ds, keyword: str) -> str:
    return str(ds.get(keyword, "") or "").strip().upper() if ds is not None else ""


class DimseArchive:
    """The PACS of ``priors.pacs``, asked by C-FIND and C-MOVE over one association."""

    def __init__(self, pacs: Destination, calling_ae: str, move_to: str, source, timeout_s: float, tls_args) -> None:
        self.pacs, self.calling_ae, self.move_to = pacs, calling_ae, move_to
        self.source, self.timeout_s, self.tls_args = source, timeout_s, tls_args
        self.name = pacs.name
        self._assoc = None
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)

    @classmethod
    def of(cls, settings) -> DimseArchive:
        pacs = parse_destination(settings.priors.pacs)
        tls_args = None
        if pacs.tls:
            from xray_spark.tls import client_context

            d = settings.deliver
            tls_args = (client_context(d.tls_ca_file, d.tls_cert, d.tls_key), pacs.host)
        node = settings.dicom_node.ae_title
        timeout = settings.dicomweb_source.timeout_seconds
        return cls(pacs, node, node, settings.dicomweb_source, timeout, tls_args)

    def _association(self):
        if self._assoc is not None and self._assoc.is_established:
            return self._assoc
        ae = requesting_ae(self.calling_ae, self.timeout_s)
        ae.add_requested_context(STUDY_ROOT_FIND)
        ae.add_requested_context(STUDY_ROOT_MOVE)
        try:
            assoc = ae.associate(self.pacs.host, self.pacs.port, ae_title=self.pacs.ae_title, tls_args=self.tls_args)
        except OSError as exc:
            raise ArchiveFailed(f"cannot connect to {self.name} ({type(exc).__name__})") from None
        if not assoc.is_established:
            why = "rejected" if assoc.is_rejected else "aborted (no connection, or no answer)"
            raise ArchiveFailed(f"association with {self.name} {why}")
        self._assoc = assoc
        return assoc

    def _find(self, level: str, **keys: str) -> list:
        """The identifiers a C-FIND at ``level`` answers; :class:`ArchiveFailed` unless it ends in Success."""
        from pydicom import Dataset

        query = Dataset()
        query.QueryRetrieveLevel = level
        for keyword, value in keys.items():
            setattr(query, keyword, value)
        found, status = [], None
        for status, identifier in self._association().send_c_find(query, STUDY_ROOT_FIND):
            code = getattr(status, "Status", None)
            if code in PENDING and identifier is not None:
                found.append(identifier)
        code = getattr(status, "Status", None)
        if code is None:
            self.close()
            raise ArchiveFailed(f"no C-FIND response from {self.name} (the association ended)")
        if int(code) != SUCCESS:
            raise ArchiveFailed(f"C-FIND ({level}) status 0x{int(code):04X} from {self.name}")
        return found

    def earlier_films(self, patient_id: str, since: dt.date, until: dt.date, skipped: Counter) -> list[Film]:
        modalities = {m.upper() for m in self.source.modalities}
        films: dict[str, Film] = {}
        dates = f"{since:%Y%m%d}-{until:%Y%m%d}"
        for study in self._find("STUDY", PatientID=patient_id, StudyDate=dates, StudyInstanceUID=""):
            study_uid, day = str(study.StudyInstanceUID), date_of(str(study.get("StudyDate", "")))
            if day is None or not since <= day <= until:
                continue  # a PACS that matched loosely
            for series in self._find("SERIES", StudyInstanceUID=study_uid, SeriesInstanceUID="", Modality=""):
                if _text(series, "Modality") not in modalities:
                    continue
                for image in self._find(
                    "IMAGE",
                    StudyInstanceUID=study_uid,
                    SeriesInstanceUID=str(series.SeriesInstanceUID),
                    SOPInstanceUID="",
                    BodyPartExamined="",
                    ViewPosition="",
                ):
                    said = [_text(image, k) for k in ("BodyPartExamined", "ViewPosition")]
                    reason = why_not(self.source, _text(series, "Modality"), *said)
                    if reason is not None:
                        skipped[reason] += 1
                        continue
                    sop = str(image.SOPInstanceUID)
                    films[sop] = (day, study_uid, str(series.SeriesInstanceUID), sop)
        return list(films.values())

    def fetch(self, film: Film, patient_id: str, spool: Spool) -> str | None:
        from pydicom import Dataset, dcmread

        query = Dataset()
        query.QueryRetrieveLevel = "IMAGE"
        query.StudyInstanceUID, query.SeriesInstanceUID, query.SOPInstanceUID = film[1:]
        answers = list(self._association().send_c_move(query, self.move_to, STUDY_ROOT_MOVE))
        code = getattr(answers[-1][0], "Status", None) if answers else None
        if code is None:
            self.close()
            raise ArchiveFailed(f"no C-MOVE response from {self.name} (the association ended)")
        if int(code) == UNKNOWN_DESTINATION:
            raise ArchiveFailed(f"{self.name} does not know the move destination {self.move_to}")
        if int(code) != SUCCESS:
            return f"C-MOVE status 0x{int(code):04X}"
        if not spool.holds(film[3]):
            raise ArchiveFailed(
                f"{self.name} moved a film to {self.move_to} and it is not in the spool {spool.root}: "
                "is that the node writing this spool?"
            )
        path = os.path.join(spool.incoming, spool.name_of(film[3]))
        ds = dcmread(path, stop_before_pixels=True)
        reason = header_why_not(self.source, ds)
        if reason is not None or str(ds.get("PatientID", "")).strip() != patient_id:
            return reason or "another patient's film"
        return None

    def close(self) -> None:
        if self._assoc is not None:
            if self._assoc.is_established:
                self._assoc.release()
            self._assoc = None
