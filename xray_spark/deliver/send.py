"""Where results go: a DICOM node (C-STORE with pynetdicom), a DICOMweb service (STOW-RS) or a folder outside the lake.

A destination is written ``AE_TITLE@HOST:PORT``, ``dicomweb:URL`` or ``folder:DIR``; its kind
picks its :class:`Sender` in :data:`SENDERS`, made from the destination and the ``deliver``
settings. A sender sends one object at a time and answers None when the receiver
acknowledged it, else a :class:`SendFailure` whose :class:`FailureKind` says what failed
(delivery counts a destination unreachable by the kind, never by the text). Nothing counts
as sent without an acknowledgement: a C-STORE Success or Warning status, the instance in a
STOW-RS response's Referenced SOP Sequence, or, for a folder, the file written, synced and
renamed into place. One association (or HTTP session) per destination and run, opened again
after a failure, as a PACS takes one association or a few.
"""

from __future__ import annotations

import dataclasses
import enum
import io
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from xray_spark import dicomweb
from xray_spark.destinations import DICOM, DICOMWEB, FOLDER, Destination
from xray_spark.uids import requesting_ae

if TYPE_CHECKING:
    from xray_spark.config.services import DeliverSettings

log = logging.getLogger(__name__)

COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
SYNTAXES = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")  # explicit and implicit VR little endian
#: C-STORE statuses that acknowledge the object (PS3.4 B.2.3: Success, and the three Warnings).
ACKNOWLEDGED = {0x0000, 0xB000, 0xB006, 0xB007}


class FailureKind(enum.Enum):
    """Why an object was not delivered, by whose side failed."""

    UNREACHABLE = "unreachable"  # no connection or no association: the destination's, counted toward giving up the run
    REFUSED = "refused"  # the receiver answered, and not with an acknowledgement
    INTERRUPTED = "interrupted"  # the connection ended during the transfer
    NOT_WRITTEN = "not written"  # a folder (or store) that could not take the file
    NO_SOURCE = "no source"  # the film's source file is not on record: never deliverable
    SOURCE = "source"  # the film's source file moved, changed or cannot be read since ingest
    NOT_BUILT = "not built"  # the result object could not be built


@dataclasses.dataclass(frozen=True)
class SendFailure:
    """A failed delivery: its kind, and the reason as ``xray.deliveries`` records it (no patient data)."""

    kind: FailureKind
    reason: str


class Sender(Protocol):
    """What delivery asks of a destination: send one object (None: acknowledged), and close at the end."""

    def send(self, data: bytes, sop_class: str, uid: str) -> SendFailure | None: ...

    def close(self) -> None: ...


class NodeSender:
    """C-STORE to one DICOM node over one association, opened when needed and again after a failure."""

    def __init__(self, destination: Destination, options: DeliverSettings) -> None:
        self.destination = destination
        self.calling_ae = options.ae_title
        self.timeout_s = options.timeout_seconds
        self.tls_args = None
        if destination.tls:  # DICOM over TLS: the PACS's certificate and address checked, ours shown if asked
            from xray_spark.tls import client_context

            context = client_context(options.tls_ca_file, options.tls_cert, options.tls_key)
            self.tls_args = (context, destination.host)
        self._assoc = None
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)  # not a line per C-STORE in the job's log

    def _association(self):
        if self._assoc is not None and self._assoc.is_established:
            return self._assoc
        ae = requesting_ae(self.calling_ae, self.timeout_s)
        for sop_class in (COMPREHENSIVE_SR, SECONDARY_CAPTURE):
            ae.add_requested_context(sop_class, list(SYNTAXES))
        d = self.destination
        assoc = ae.associate(d.host, d.port, ae_title=d.ae_title, tls_args=self.tls_args)
        if not assoc.is_established:
            why = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "not established"
            raise ConnectionError(f"association with {d.name} {why}")
        self._assoc = assoc
        return assoc

    def send(self, data: bytes, sop_class: str, uid: str = "") -> SendFailure | None:
        """None when the node acknowledged the object, else why not (nothing patient-identifying)."""
        from pydicom import dcmread

        try:
            assoc = self._association()
        except (ConnectionError, OSError) as exc:
            why = str(exc) if isinstance(exc, ConnectionError) else f"cannot connect to {self.destination.name}"
            return SendFailure(FailureKind.UNREACHABLE, why)
        accepted = [c for c in assoc.accepted_contexts if c.abstract_syntax == sop_class]
        if not accepted:
            name = "Comprehensive SR" if sop_class == COMPREHENSIVE_SR else "Secondary Capture"
            why = f"{self.destination.name} refused {name} Storage ({sop_class}) at association"
            return SendFailure(FailureKind.REFUSED, why)
        try:
            status = assoc.send_c_store(dcmread(io.BytesIO(data)))
        except (RuntimeError, ValueError, OSError) as exc:
            self.close()
            return SendFailure(FailureKind.INTERRUPTED, f"C-STORE failed ({type(exc).__name__})")
        code = getattr(status, "Status", None)
        if code is None:  # no answer: the association was aborted or timed out
            self.close()
            why = f"no C-STORE response from {self.destination.name} (the association ended)"
            return SendFailure(FailureKind.INTERRUPTED, why)
        if int(code) in ACKNOWLEDGED:
            return None
        return SendFailure(FailureKind.REFUSED, f"C-STORE status 0x{int(code):04X}")

    def close(self) -> None:
        if self._assoc is not None:
            if self._assoc.is_established:
                self._assoc.release()
            self._assoc = None


class FolderSender:
    """Each object written as ``<SOP Instance UID>.dcm`` in a folder outside the lake, whole or not at all."""

    def __init__(self, destination: Destination, options: DeliverSettings | None = None) -> None:
        self.destination = destination

    def send(self, data: bytes, sop_class: str, uid: str = "") -> SendFailure | None:
        folder = self.destination.folder
        try:
            os.makedirs(folder, mode=0o700, exist_ok=True)
            final = os.path.join(folder, f"{uid}.dcm")
            temporary = f"{final}.partial"
            with open(temporary, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(temporary, final)
        except OSError as exc:
            return SendFailure(
                FailureKind.NOT_WRITTEN, f"cannot write to {folder} ({type(exc).__name__}: {exc.strerror})"
            )
        return None

    def close(self) -> None:
        pass


#: STOW-RS response attributes (PS3.18 10.5.3): the instances stored, and those refused with a Failure Reason.
REFERENCED_SOP, FAILED_SOP = "ReferencedSOPSequence", "FailedSOPSequence"


class DicomWebSender:
    """STOW-RS of each object to ``<root>/studies`` of a DICOMweb service (PS3.18), over one HTTP session."""

    def __init__(self, destination: Destination, options: DeliverSettings) -> None:
        self.destination = destination
        self.timeout_s = options.timeout_seconds
        credentials = dicomweb.read_credentials(options.dicomweb_auth_file, "deliver.dicomweb_auth_file")
        self._session = dicomweb.http_session(credentials, options.tls_ca_file)
        self._client = None

    def client(self):
        if self._client is None:
            self._client = dicomweb.client(self.destination.address, self._session, self.timeout_s)
        return self._client

    def send(self, data: bytes, sop_class: str, uid: str = "") -> SendFailure | None:
        """None when the service lists the instance as stored, else why not (nothing patient-identifying)."""
        import requests
        from pydicom import dcmread

        name = self.destination.name
        try:
            answer = self.client().store_instances([dcmread(io.BytesIO(data))])
        except requests.HTTPError as exc:
            return _http_failure(name, exc.response)
        except requests.exceptions.SSLError:
            return SendFailure(FailureKind.UNREACHABLE, f"TLS with {name} failed: its certificate is not trusted")
        except requests.ConnectionError as exc:  # refused, reset, or no connection within the timeout
            return SendFailure(FailureKind.UNREACHABLE, f"cannot connect to {name} ({type(exc).__name__})")
        except (requests.RequestException, ValueError) as exc:  # a read timeout, a broken answer
            return SendFailure(FailureKind.INTERRUPTED, f"STOW-RS to {name} failed ({type(exc).__name__})")
        stored = {str(item.get("ReferencedSOPInstanceUID", "")) for item in answer.get(REFERENCED_SOP, [])}
        if uid in stored:
            return None
        for item in answer.get(FAILED_SOP, []):
            if str(item.get("ReferencedSOPInstanceUID", "")) == uid:
                reason = int(item.get("FailureReason", 0))
                return SendFailure(FailureKind.REFUSED, f"STOW-RS failure reason 0x{reason:04X}")
        return SendFailure(FailureKind.REFUSED, f"{name} did not list the instance as stored")

    def close(self) -> None:
        self._session.close()


def _http_failure(name: str, response) -> SendFailure:
    """An HTTP error answer: the service's (unreachable for this run) unless it is about the instance itself."""
    code = getattr(response, "status_code", 0)
    if code in (401, 403):
        return SendFailure(FailureKind.UNREACHABLE, f"HTTP {code} from {name}: the credentials were refused")
    if code in (400, 409, 413, 415):  # the request or the instance: 409 is STOW-RS's "none stored"
        return SendFailure(FailureKind.REFUSED, f"HTTP {code} from {name}")
    return SendFailure(FailureKind.UNREACHABLE, f"HTTP {code} from {name}")


#: The sender of each destination kind, made from the destination and the ``deliver`` settings.
SENDERS: dict[str, Callable[[Destination, DeliverSettings], Sender]] = {
    DICOM: NodeSender,
    FOLDER: FolderSender,
    DICOMWEB: DicomWebSender,
}


def sender_for(destination: Destination, options: DeliverSettings) -> Sender:
    return SENDERS[destination.kind](destination, options)
