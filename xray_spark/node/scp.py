"""The node: a pynetdicom Application Entity answering C-ECHO and C-STORE into the spool.

Storage is offered for the classes a chest film arrives as (:data:`STORAGE_CLASSES`), each
with every transfer syntax prepare decodes (:data:`xray_spark.imaging.transfer_syntaxes.DECODED`),
accepted as the sender offers it: the bytes that reach the spool are the bytes the PACS sent.
A C-STORE is answered Success only once the instance is durable in the spool
(:meth:`xray_spark.spool.Spool.store_file`), under the data set's own SOP Instance UID, checked
against the request's; a write that fails is answered Out of Resources (0xA700) and leaves
nothing behind. What a peer can make the node hold is bounded in :mod:`xray_spark.node.limits`.
Each association is logged in one line when it closes: calling AE title, peer address,
instances stored, already held, kept as corrections and refused, bytes, seconds. No line names
a patient: the data sets are read no further than their SOP Class and Instance UIDs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
import threading
import time
from typing import Any

from xray_spark.audit import (
    DESTINATION,
    INSTANCES_TRANSFERRED,
    MINOR_FAILURE,
    NODE_AUTHENTICATION,
    SECURITY_ALERT,
    SOURCE,
    AuditTrail,
    Participant,
    patient,
    study,
)
from xray_spark.audit import SUCCESS as AUDIT_SUCCESS
from xray_spark.config import DicomNodeSettings
from xray_spark.imaging.transfer_syntaxes import DECODED
from xray_spark.node.access import parse_allow, refusal
from xray_spark.node.limits import Gate, Limits, dataset_uids, disk_error, install
from xray_spark.spool import CORRECTION, HELD, STORED, BadInstance, Spool
from xray_spark.uids import identify

log = logging.getLogger("xray_spark.node")

#: Storage SOP classes the node accepts, and why. Everything else is refused at negotiation:
#: a CT, an MR or a report can never be scored, and a structured report's text (names, history)
#: has no reason to be on this machine. What is accepted and still not a frontal chest film
#: (a lateral view, an abdomen, a digitised film's Secondary Capture of another modality) is
#: stored and skipped by prepare with its reason, as from a folder.
STORAGE_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.1": "Computed Radiography Image Storage (CR)",
    "1.2.840.10008.5.1.4.1.1.1.1": "Digital X-Ray Image Storage - For Presentation (DX)",
    "1.2.840.10008.5.1.4.1.1.1.1.1": "Digital X-Ray Image Storage - For Processing (DX)",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image Storage (a digitised film)",
}
VERIFICATION = "1.2.840.10008.1.1"
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
#: PS3.4 B.2.3: Error, Data Set does not match SOP Class.
DOES_NOT_MATCH_CLASS = 0xA900
#: PS3.7 C.4: Failure, Invalid SOP Instance (the data set is not the instance the request names).
INVALID_INSTANCE = 0x0117
CANNOT_UNDERSTAND = 0xC000


@dataclasses.dataclass
class Tally:
    """One association's counts, logged when it closes."""

    calling_ae: str = ""
    peer: str = ""
    stored: int = 0
    held: int = 0  # the same SOP instance was in the spool already: Success, not stored twice
    corrections: int = 0  # a SOP instance re-sent with other bytes: Success, kept in corrections/, not scored
    refused: int = 0
    bytes: int = 0
    started: float = dataclasses.field(default_factory=time.monotonic)
    stored_files: list[str] = dataclasses.field(default_factory=list)  # for the audit trail (hospital zone)


class Node:
    """The handlers of one running node, with its counts (thread-safe: one thread per association)."""

    def __init__(self, settings: DicomNodeSettings, spool: Spool, audit: AuditTrail | None = None) -> None:
        self.settings = settings
        self.spool = spool
        self.audit = audit
        self.allowed = parse_allow(settings.allow)
        self._lock = threading.Lock()
        self._open: dict[int, Tally] = {}
        self.totals = {
            "associations": 0,
            "refused_associations": 0,
            "stored": 0,
            "held": 0,
            "refused": 0,
            "corrections": 0,
        }

    def _tally(self, assoc: Any) -> Tally:
        with self._lock:
            return self._open.setdefault(id(assoc), Tally())

    def on_requested(self, event: Any) -> None:
        """An A-ASSOCIATE-RQ: rejected (permanent, calling AE title not recognised) unless allowed.

        (pynetdicom lets this handler reject; the negotiation that follows sees the contexts trimmed.)
        """
        assoc = event.assoc
        calling = str(assoc.requestor.primitive.calling_ae_title).strip()
        address = str(assoc.requestor.address)
        tally = self._tally(assoc)
        tally.calling_ae, tally.peer = calling, f"{address}:{assoc.requestor.port}"
        why = refusal(self.allowed, calling, address)
        if why is not None:
            with self._lock:
                self.totals["refused_associations"] += 1
            log.warning("association from %s@%s refused: %s", calling, tally.peer, why)
            if self.audit is not None:
                who = Participant(calling, True, address, SOURCE)
                us = Participant(self.settings.ae_title, False, "", DESTINATION)
                self.audit.record(SECURITY_ALERT, "E", MINOR_FAILURE, [who, us], event_type=NODE_AUTHENTICATION)
            tally.calling_ae = ""  # logged here already
            assoc.acse.send_reject(0x01, 0x01, 0x03)
            assoc.kill()  # as pynetdicom's own rejections do: the reject is sent before the socket closes
            return
        _as_offered(assoc.requestor.primitive.presentation_context_definition_list)

    def on_echo(self, _event: Any) -> int:
        return SUCCESS

    def on_store(self, event: Any) -> int:
        """Keep one C-STORE's data set, written to ``.receiving/`` as it arrived; Success only once it is durable.

        Refused: a data set over ``image.max_file_bytes`` or that the disk could not take (Out of
        Resources), and one whose own SOP Class or SOP Instance UID is not the request's (a sender
        that names one film by another's UID would have the second film answered as held and lost).
        """
        tally = self._tally(event.assoc)
        request = event.request
        received = getattr(request, "_dataset_file", None)  # a ReceivingFile (limits.install)
        if received is None:  # a C-STORE request without a data set
            return self._refused(tally, CANNOT_UNDERSTAND, "refused: the request carries no data set")
        received.sync()
        if received.refused is not None:
            return self._refused(tally, OUT_OF_RESOURCES, f"not stored ({received.refused}): answered Out of Resources")
        said_class, said_uid = str(request.AffectedSOPClassUID), str(request.AffectedSOPInstanceUID)
        try:
            sop_class, sop_uid = dataset_uids(received.name)
        except Exception as exc:  # not a data set pydicom can read up to its UIDs
            return self._refused(
                tally, CANNOT_UNDERSTAND, f"refused: its data set cannot be read ({type(exc).__name__})"
            )
        if sop_class != said_class:
            return self._refused(
                tally, DOES_NOT_MATCH_CLASS, "refused: its data set's SOP Class UID is not the request's"
            )
        if sop_uid != said_uid:
            return self._refused(
                tally, INVALID_INSTANCE, "refused: its data set's SOP Instance UID is not the request's"
            )
        try:
            outcome = self.spool.store_file(sop_uid, received.name)
        except BadInstance as exc:
            return self._refused(tally, CANNOT_UNDERSTAND, f"refused: {exc}")
        except OSError as exc:
            why = disk_error(exc)
            return self._refused(tally, OUT_OF_RESOURCES, f"not stored ({why}): answered Out of Resources")
        tally.bytes += received.written
        if outcome == CORRECTION:
            log.warning(
                "an instance from %s re-sent with other bytes under a SOP Instance UID the spool holds: kept in "
                "corrections/, not scored (changed pixel data need a new SOP Instance UID)",
                tally.calling_ae,
            )
        if outcome == STORED and self.audit is not None:  # read for the audit when the association closes
            tally.stored_files.append(os.path.join(self.spool.incoming, self.spool.name_of(sop_uid)))
        field = {STORED: "stored", HELD: "held", CORRECTION: "corrections"}[outcome]
        setattr(tally, field, getattr(tally, field) + 1)
        return SUCCESS

    def _refused(self, tally: Tally, status: int, what: str) -> int:
        tally.refused += 1
        log.warning("an instance from %s %s", tally.calling_ae, what)
        return status

    def on_closed(self, event: Any) -> None:
        with self._lock:
            tally = self._open.pop(id(event.assoc), None)
            if tally is None or not tally.calling_ae:
                return
            self.totals["associations"] += 1
            for name in ("stored", "held", "refused", "corrections"):
                self.totals[name] += getattr(tally, name)
        how = "aborted" if event.assoc.is_aborted else "released" if event.assoc.is_released else "closed"
        log.info(
            "association %s@%s %s: %d stored, %d already held, %d corrections, %d refused, %.1f MB in %.1f s",
            tally.calling_ae,
            tally.peer,
            how,
            tally.stored,
            tally.held,
            tally.corrections,
            tally.refused,
            tally.bytes / 1e6,
            time.monotonic() - tally.started,
        )
        if tally.stored and self.audit is not None:  # DICOM Instances Transferred: from the sender into the spool
            address = tally.peer.rpartition(":")[0]
            who = [
                Participant(tally.calling_ae, True, address, SOURCE),
                Participant(self.settings.ae_title, False, "", DESTINATION),
            ]
            patients, studies = _who_and_what(tally.stored_files)
            subjects = [patient(p) for p in sorted(patients)] + [study(u) for u in sorted(studies)]
            self.audit.record(INSTANCES_TRANSFERRED, "C", AUDIT_SUCCESS, who, subjects)


def _who_and_what(paths: list[str]) -> tuple[set[str], set[str]]:
    """The Patient IDs and Study Instance UIDs of the films an association stored, for its audit message."""
    from pydicom import dcmread

    patients, studies = set(), set()
    for path in paths:
        try:
            ds = dcmread(path, stop_before_pixels=True, specific_tags=["PatientID", "StudyInstanceUID"])
        except Exception:  # moved since, or unreadable: prepare quarantines what it cannot read
            continue
        patients.add(str(ds.get("PatientID", "") or ""))
        studies.add(str(ds.get("StudyInstanceUID", "") or ""))
    return patients - {""}, studies - {""}


def _as_offered(contexts: list[Any]) -> None:
    """Each context keeps only the first syntax its sender offers that prepare decodes.

    pynetdicom would choose by the acceptor's order; a PACS lists its preference first (its
    stored syntax, then uncompressed ones it could convert to), and the spool keeps what it stored.
    """
    for context in contexts:
        offered = [syntax for syntax in context.transfer_syntax if syntax in DECODED]
        if offered:
            context.transfer_syntax = offered[:1]


def application_entity(settings: DicomNodeSettings) -> Any:
    """The AE: Verification and the storage classes, every decodable transfer syntax, the limits."""
    from pynetdicom import AE

    ae = AE(ae_title=settings.ae_title)
    identify(ae)
    ae.add_supported_context(VERIFICATION)
    for sop_class in STORAGE_CLASSES:
        ae.add_supported_context(sop_class, list(DECODED))
    ae.require_called_aet = True  # a study routed to another node's title is refused, not kept
    ae.maximum_associations = settings.max_associations
    ae.maximum_pdu_size = settings.max_pdu
    ae.acse_timeout = settings.acse_timeout_seconds
    ae.dimse_timeout = settings.dimse_timeout_seconds
    ae.network_timeout = settings.network_timeout_seconds
    return ae


def tls_refused(trail: AuditTrail, settings: DicomNodeSettings, address: str) -> None:
    """Security Alert (Node Authentication): a connection from ``address`` whose TLS failed (no certificate the
    node's authority signed, or no TLS at all)."""
    who = Participant(address, True, address, SOURCE)
    us = Participant(settings.ae_title, False, "", DESTINATION)
    trail.record(SECURITY_ALERT, "E", MINOR_FAILURE, [who, us], event_type=NODE_AUTHENTICATION)


def serve(
    settings: DicomNodeSettings,
    spool: Spool,
    stopping: threading.Event,
    on_ready: Any,
    *,
    max_instance_bytes: int,
    audit: AuditTrail | None = None,
) -> dict:
    """Listen until ``stopping`` is set; then finish the associations in flight, for at most the stop timeout."""
    from pynetdicom import evt

    install(
        Limits(
            settings.max_pdu,
            max_instance_bytes,
            settings.pdu_timeout_seconds,
            settings.association_timeout_seconds,
            spool.receiving,
            on_tls_failure=None if audit is None else lambda address: tls_refused(audit, settings, address),
        )
    )
    node = Node(settings, spool, audit)
    ae = application_entity(settings)
    handlers = [
        (evt.EVT_REQUESTED, node.on_requested),
        (evt.EVT_C_ECHO, node.on_echo),
        (evt.EVT_C_STORE, node.on_store),
        (evt.EVT_CONN_CLOSE, node.on_closed),
    ]
    addresses = {a for where in node.allowed.values() for a in where} if node.allowed else None
    gate = Gate(addresses, settings.max_associations_per_address)
    tls = None
    if settings.tls_cert:
        from xray_spark.tls import HandshakeInThread, server_context

        tls = HandshakeInThread(server_context(settings.tls_cert, settings.tls_key, settings.tls_ca_file))
    server = ae.start_server((settings.host, settings.port), block=False, evt_handlers=handlers, ssl_context=tls)
    server.verify_request = gate.verify  # at accept, before a byte is read
    on_ready()
    stopping.wait()
    server.shutdown()  # no new associations; those in flight go on
    deadline = time.monotonic() + settings.stop_timeout_seconds
    while server.active_associations and time.monotonic() < deadline:
        time.sleep(0.05)
    left = server.active_associations
    for assoc in left:  # not acknowledged: the sender sends those instances again
        _hang_up(assoc)
    if left:
        log.warning("%d associations still open after %.0f s were aborted", len(left), settings.stop_timeout_seconds)
    return {**node.totals, "aborted_at_stop": len(left), "closed_at_accept": gate.refused}


def _hang_up(assoc: Any) -> None:
    """End an association whatever its peer does: its socket shut (a read blocked on it returns), then an A-ABORT
    from a thread of its own, so that a peer that never answers cannot hold the stop."""
    sock = getattr(getattr(assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    threading.Thread(target=assoc.abort, name="xray-abort", daemon=True).start()
