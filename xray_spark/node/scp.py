"""The node: a pynetdicom Application Entity answering C-ECHO and C-STORE into the spool.

Storage is offered for the classes a chest film arrives as (:data:`STORAGE_CLASSES`), each
with every transfer syntax prepare decodes (:data:`xray_spark.transfer_syntaxes.DECODED`),
accepted as the sender offers it: the bytes that reach the spool are the bytes the PACS sent.
A C-STORE is answered Success only once the instance is durable in the spool
(:meth:`xray_spark.spool.Spool.store`); a write that fails is answered Out of Resources
(0xA700) and leaves nothing behind. Each association is logged in one line when it closes:
calling AE title, peer address, instances stored, already held and refused, bytes, seconds.
No line names a patient: the datasets are never decoded here.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import threading
import time
from typing import Any

from xray_spark.config import DicomNodeSettings
from xray_spark.node.access import parse_allow, refusal
from xray_spark.spool import BadInstance, Spool
from xray_spark.transfer_syntaxes import DECODED

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
CANNOT_UNDERSTAND = 0xC000


@dataclasses.dataclass
class Tally:
    """One association's counts, logged when it closes."""

    calling_ae: str = ""
    peer: str = ""
    stored: int = 0
    held: int = 0  # the same SOP instance was in the spool already: Success, not stored twice
    refused: int = 0
    bytes: int = 0
    started: float = dataclasses.field(default_factory=time.monotonic)


class Node:
    """The handlers of one running node, with its counts (thread-safe: one thread per association)."""

    def __init__(self, settings: DicomNodeSettings, spool: Spool) -> None:
        self.settings = settings
        self.spool = spool
        self.allowed = parse_allow(settings.allow)
        self._lock = threading.Lock()
        self._open: dict[int, Tally] = {}
        self.totals = {"associations": 0, "refused_associations": 0, "stored": 0, "held": 0, "refused": 0}

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
            tally.calling_ae = ""  # logged here already
            assoc.acse.send_reject(0x01, 0x01, 0x03)
            assoc.kill()  # as pynetdicom's own rejections do: the reject is sent before the socket closes
            return
        _as_offered(assoc.requestor.primitive.presentation_context_definition_list)

    def on_echo(self, _event: Any) -> int:
        return SUCCESS

    def on_store(self, event: Any) -> int:
        tally = self._tally(event.assoc)
        try:
            data = event.encoded_dataset(include_meta=True)
            stored = self.spool.store(str(event.request.AffectedSOPInstanceUID), data)
        except BadInstance as exc:
            tally.refused += 1
            log.warning("an instance from %s refused: %s", tally.calling_ae, exc)
            return CANNOT_UNDERSTAND
        except OSError as exc:
            tally.refused += 1
            why = "the disk is full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else errno.errorcode.get(exc.errno)
            log.error("an instance from %s not stored (%s): answered Out of Resources", tally.calling_ae, why)
            return OUT_OF_RESOURCES
        tally.bytes += len(data)
        if stored:
            tally.stored += 1
        else:
            tally.held += 1
        return SUCCESS

    def on_closed(self, event: Any) -> None:
        with self._lock:
            tally = self._open.pop(id(event.assoc), None)
            if tally is None or not tally.calling_ae:
                return
            self.totals["associations"] += 1
            for name in ("stored", "held", "refused"):
                self.totals[name] += getattr(tally, name)
        how = "aborted" if event.assoc.is_aborted else "released" if event.assoc.is_released else "closed"
        log.info(
            "association %s@%s %s: %d stored, %d already held, %d refused, %.1f MB in %.1f s",
            tally.calling_ae,
            tally.peer,
            how,
            tally.stored,
            tally.held,
            tally.refused,
            tally.bytes / 1e6,
            time.monotonic() - tally.started,
        )


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


def serve(settings: DicomNodeSettings, spool: Spool, stopping: threading.Event, on_ready: Any) -> dict:
    """Listen until ``stopping`` is set; then finish the associations in flight (up to the stop timeout)."""
    from pynetdicom import evt

    node = Node(settings, spool)
    ae = application_entity(settings)
    handlers = [
        (evt.EVT_REQUESTED, node.on_requested),
        (evt.EVT_C_ECHO, node.on_echo),
        (evt.EVT_C_STORE, node.on_store),
        (evt.EVT_CONN_CLOSE, node.on_closed),
    ]
    server = ae.start_server((settings.host, settings.port), block=False, evt_handlers=handlers)
    on_ready()
    stopping.wait()
    server.shutdown()  # no new associations; those in flight go on
    deadline = time.monotonic() + settings.stop_timeout_seconds
    while server.active_associations and time.monotonic() < deadline:
        time.sleep(0.05)
    left = server.active_associations
    for assoc in left:  # not acknowledged: the sender sends those instances again
        assoc.abort()
    if left:
        log.warning("%d associations still open after %.0f s were aborted", len(left), settings.stop_timeout_seconds)
    return {**node.totals, "aborted_at_stop": len(left)}
