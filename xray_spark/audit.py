"""The audit trail: who saw or moved which patient's films, when (DICOM PS3.15 Annex A.5 audit messages, IHE ATNA).

Each event is one ``AuditMessage`` (A.5.1's XML), appended as one line to ``audit.file`` (in the
hospital zone, outside the lake: the messages carry Patient IDs) and, with ``audit.syslog``,
sent to a collector as an RFC 5424 syslog message (UDP, or TCP with octet counting, RFC 6587).
The events (A.5.3):

* **User Authentication** (110114): each sign-in to the readers' web app and each one refused.
* **DICOM Instances Accessed** (110103) and **Patient Record** (110110): a film page or a
  patient page a reader opens; the patient is the lake's (``<dataset>/<patient number>``).
* **DICOM Instances Transferred** (110104): each association the node stores films from, each
  DICOMweb pull, and each study delivery sends results into (the one place identity is
  re-joined); the patient is the Patient ID, the study its Study Instance UID.
* **Security Alert** (110113, Node Authentication): an association or a connection the node refuses.

``python -m xray_spark.audit query`` answers "who accessed patient P between two dates", P by the
lake's patient (``hospital/7``) or, given the pseudonym key, by Patient ID: a Patient ID names
the lake's patient through ``xray.patient_keys``, and a lake patient the Patient IDs of the
node's, the pull's and delivery's messages through the same key.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import fcntl
import logging
import os
import socket
import threading
from collections.abc import Iterable, Iterator
from urllib.parse import urlsplit
from xml.etree import ElementTree as ET

log = logging.getLogger(__name__)

#: (code, coding scheme, meaning) of each event (PS3.16 CID 400) and event type (CID 401, 402).
USER_AUTHENTICATION = ("110114", "DCM", "User Authentication")
LOGIN = ("110122", "DCM", "Login")
INSTANCES_ACCESSED = ("110103", "DCM", "DICOM Instances Accessed")
PATIENT_RECORD = ("110110", "DCM", "Patient Record")
INSTANCES_TRANSFERRED = ("110104", "DCM", "DICOM Instances Transferred")
SECURITY_ALERT = ("110113", "DCM", "Security Alert")
NODE_AUTHENTICATION = ("110126", "DCM", "Node Authentication")
SOURCE, DESTINATION = ("110153", "DCM", "Source Role ID"), ("110152", "DCM", "Destination Role ID")
#: Participant object ID types (RFC 3881's, and DICOM's Study Instance UID).
PATIENT_NUMBER = ("2", "RFC-3881", "Patient Number")
STUDY_UID = ("110180", "DCM", "Study Instance UID")
SOP_UID = ("110181", "DCM", "SOP Instance UID")
#: EventOutcomeIndicator: success, minor failure, serious failure.
SUCCESS, MINOR_FAILURE, SERIOUS_FAILURE = "0", "4", "8"


@dataclasses.dataclass(frozen=True)
class Participant:
    """An ActiveParticipant: a user, an application or a node, and whether it asked for what happened."""

    user: str
    requestor: bool
    address: str = ""
    role: tuple[str, str, str] | None = None


@dataclasses.dataclass(frozen=True)
class Subject:
    """A ParticipantObject: a patient (type 1, role 1) or a study (type 2, role 3), by an ID of ``id_type``.

    ``name``: its ParticipantObjectName (a patient's name where the event holds it); A.5.1's schema asks for a
    name or a query in every participant object, so the element is written, empty when no name is known."""

    id: str
    id_type: tuple[str, str, str]
    type_code: str = "1"
    role: str = "1"
    name: str = ""


def patient(id_: str) -> Subject:
    return Subject(id_, PATIENT_NUMBER)


def study(uid: str) -> Subject:
    return Subject(uid, STUDY_UID, type_code="2", role="3")


def _code(parent: ET.Element, tag: str, code: tuple[str, str, str]) -> None:
    ET.SubElement(parent, tag, {"csd-code": code[0], "codeSystemName": code[1], "originalText": code[2]})


def message(
    event: tuple[str, str, str],
    action: str,
    outcome: str,
    participants: Iterable[Participant],
    subjects: Iterable[Subject] = (),
    *,
    event_type: tuple[str, str, str] | None = None,
    source_id: str = "",
    when: dt.datetime | None = None,
) -> str:
    """One AuditMessage (PS3.15 A.5.1) as XML text on one line."""
    root = ET.Element("AuditMessage")
    stamp = (when or dt.datetime.now(dt.UTC)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    identification = ET.SubElement(
        root,
        "EventIdentification",
        {"EventActionCode": action, "EventDateTime": stamp, "EventOutcomeIndicator": outcome},
    )
    _code(identification, "EventID", event)
    if event_type is not None:
        _code(identification, "EventTypeCode", event_type)
    for p in participants:
        attributes = {"UserID": p.user, "UserIsRequestor": "true" if p.requestor else "false"}
        if p.address:  # 2: an IP address
            attributes |= {"NetworkAccessPointID": p.address, "NetworkAccessPointTypeCode": "2"}
        element = ET.SubElement(root, "ActiveParticipant", attributes)
        if p.role is not None:
            _code(element, "RoleIDCode", p.role)
    source = ET.SubElement(root, "AuditSourceIdentification", {"AuditSourceID": source_id or default_source()})
    _code(source, "AuditSourceTypeCode", ("4", "DCM", "Application Server Process"))
    for s in subjects:
        element = ET.SubElement(
            root,
            "ParticipantObjectIdentification",
            {
                "ParticipantObjectID": s.id,
                "ParticipantObjectTypeCode": s.type_code,
                "ParticipantObjectTypeCodeRole": s.role,
            },
        )
        _code(element, "ParticipantObjectIDTypeCode", s.id_type)
        ET.SubElement(element, "ParticipantObjectName").text = s.name
    return ET.tostring(root, encoding="unicode")


def default_source() -> str:
    return f"xray-spark@{socket.gethostname()}"


class AuditTrail:
    """Where the messages go: the file (append, one message per line, synced) and the syslog collector if any.

    A message that cannot be written is one log line; the work it records goes on (an audit that stopped the
    night would be an attack on the night)."""

    def __init__(self, path: str, syslog: str = "", source_id: str = "") -> None:
        self.path = path
        self.syslog = syslog
        self.source_id = source_id or default_source()
        self._lock = threading.Lock()

    def record(self, event, action, outcome, participants, subjects=(), **kwargs) -> str:
        text = message(event, action, outcome, participants, subjects, source_id=self.source_id, **kwargs)
        with self._lock:
            try:
                os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)  # one line whole, with other processes' lines
                    os.write(fd, text.encode() + b"\n")
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                log.warning("the audit message could not be written to %s (%s)", self.path, exc.strerror)
            if self.syslog:
                send_syslog(self.syslog, text)
        return text


def syslog_frame(text: str, *, app: str = "xray-spark", when: dt.datetime | None = None) -> bytes:
    """An RFC 5424 message carrying ``text``: facility authpriv (10), severity notice (5), MSGID as ATNA asks."""
    stamp = (when or dt.datetime.now(dt.UTC)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return f"<85>1 {stamp} {socket.gethostname()} {app} {os.getpid()} IHE+RFC-3881 - \ufeff{text}".encode()


def send_syslog(address: str, text: str) -> None:
    """``udp://host:port`` (RFC 5426) or ``tcp://host:port`` (octet counting, RFC 6587); a failure is a log line."""
    parts = urlsplit(address)
    frame = syslog_frame(text)
    try:
        if parts.scheme == "udp":
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.sendto(frame, (parts.hostname, parts.port or 514))
        else:
            with socket.create_connection((parts.hostname, parts.port or 601), timeout=5) as sock:
                sock.sendall(f"{len(frame)} ".encode() + frame)
    except OSError as exc:
        log.warning("the audit message could not be sent to %s (%s)", address, type(exc).__name__)


def trail(settings) -> AuditTrail | None:
    """The trail the settings name (``audit.file``), or None when it is turned off (``audit.file`` empty)."""
    return AuditTrail(settings.audit.file, settings.audit.syslog) if settings.audit.file else None


# -- reading it back -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Entry:
    """One message as the query command shows it."""

    when: str
    event: str
    action: str
    outcome: str
    users: tuple[str, ...]
    patients: tuple[str, ...]
    studies: tuple[str, ...]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def read(path: str) -> Iterator[Entry]:
    """Each message of the file at ``path``, oldest first."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            root = ET.fromstring(line)
            ident = root.find("EventIdentification")
            objects = [
                (o.get("ParticipantObjectID", ""), o.find("ParticipantObjectIDTypeCode").get("csd-code"))
                for o in root.findall("ParticipantObjectIdentification")
            ]

            yield Entry(
                when=ident.get("EventDateTime", ""),
                event=ident.find("EventID").get("originalText", ""),
                action=ident.get("EventActionCode", ""),
                outcome=ident.get("EventOutcomeIndicator", ""),
                users=tuple(
                    p.get("UserID", "") for p in root.findall("ActiveParticipant") if p.get("UserIsRequestor") == "true"
                ),
                patients=tuple(i for i, code in objects if code == PATIENT_NUMBER[0]),
                studies=tuple(i for i, code in objects if code == STUDY_UID[0]),
            )


def who_accessed(path: str, names: set[str], since: dt.date | None = None, until: dt.date | None = None) -> list[Entry]:
    """The messages about any patient in ``names`` (lake patients and Patient IDs), between the dates (inclusive)."""
    found = []
    for entry in read(path):
        day = dt.date.fromisoformat(entry.when[:10])
        if (since and day < since) or (until and day > until):
            continue
        if names & set(entry.patients):
            found.append(entry)
    return found


def lake_patients(lake_root: str) -> dict[str, str]:
    """Pseudonym -> ``<dataset>/<patient number>`` from ``xray.patient_keys`` (pyarrow: no Spark)."""
    import pyarrow.dataset as ds

    from xray_spark.lake import Lake

    path = Lake.at(lake_root).path("tables", "patient_keys")
    if not os.path.isdir(path):
        return {}
    table = ds.dataset(path, format="parquet", partitioning="hive").to_table(
        columns=["patient_pseudonym", "patient_id", "dataset"]
    )
    return {
        k: f"{d}/{n}"
        for k, n, d in zip(
            *(table.column(c).to_pylist() for c in ("patient_pseudonym", "patient_id", "dataset")), strict=True
        )
    }


def names_of(path: str, key: bytes | None, lake_root: str, *, patient: str = "", patient_id: str = "") -> set[str]:
    """Every name the trail may give the patient asked about: the lake's patient and, with the key, the Patient IDs
    of the hospital-zone messages that are that patient (or the lake's patient a Patient ID is)."""
    from xray_spark.privacy import pseudonym

    names = {n for n in (patient, patient_id) if n}
    if key is None:
        return names
    lake = lake_patients(lake_root)
    if patient_id:
        names.add(lake.get(pseudonym(key, patient_id), ""))
    if patient:
        seen = {p for entry in read(path) for p in entry.patients}
        names |= {p for p in seen if lake.get(pseudonym(key, p)) == patient}
    return names - {""}


def _arg_parser():
    from xray_spark import cli

    parser = cli.base_parser("python -m xray_spark.audit", "Who accessed a patient's films, and when.")
    parser.add_argument("command", choices=["query"])
    parser.add_argument("--patient", default="", help="the lake's patient, <dataset>/<patient number> (hospital/7)")
    parser.add_argument("--patient-id", default="", help="the Patient ID (needs the pseudonym key: privacy.key_file)")
    parser.add_argument("--since", type=dt.date.fromisoformat, help="from this date (YYYY-MM-DD)")
    parser.add_argument("--until", type=dt.date.fromisoformat, help="to this date, inclusive")
    return parser


def main(argv: list[str] | None = None) -> int:
    import json
    import sys

    from xray_spark import cli
    from xray_spark.errors import UsageError

    args = _arg_parser().parse_args(argv)

    def body() -> int:
        settings = cli.resolve_settings(args)
        if not args.patient and not args.patient_id:
            raise UsageError("name the patient: --patient DATASET/NUMBER or --patient-id ID")
        if not settings.audit.file or not os.path.exists(settings.audit.file):
            raise UsageError(f"no audit trail at {settings.audit.file or '(audit.file is empty)'}")
        from xray_spark.privacy import read_key

        try:
            key = read_key(settings.privacy, settings.lake)
        except UsageError:
            if args.patient_id:
                raise
            key = None  # the lake's patient alone: the web app's messages
        names = names_of(settings.audit.file, key, settings.lake, patient=args.patient, patient_id=args.patient_id)
        found = who_accessed(settings.audit.file, names, args.since, args.until)
        for entry in found:
            print(json.dumps(entry.to_dict()), flush=True)
        print(f"{len(found)} audit messages about {args.patient or args.patient_id}", file=sys.stderr)
        return 0

    return cli.run_job("audit", body, args)


if __name__ == "__main__":
    raise SystemExit(main())
