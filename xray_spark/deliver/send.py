"""Where results go: a DICOM node (C-STORE with pynetdicom) or a folder outside the lake.

A destination is written ``AE_TITLE@HOST:PORT`` or ``folder:DIR``. Each sends one object
at a time and says whether the receiver acknowledged it; nothing counts as sent without
an acknowledgement: a C-STORE Success or Warning status, or, for a folder, the file
written, synced and renamed into place. One association per destination and run (opened
again after a failure), as a PACS takes one association or a few.
"""

from __future__ import annotations

import io
import logging
import os

from xray_spark.destinations import Destination

log = logging.getLogger(__name__)

COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
SYNTAXES = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")  # explicit and implicit VR little endian
#: C-STORE statuses that acknowledge the object (PS3.4 B.2.3: Success, and the three Warnings).
ACKNOWLEDGED = {0x0000, 0xB000, 0xB006, 0xB007}


class NodeSender:
    """C-STORE to one DICOM node over one association, opened when needed and again after a failure."""

    def __init__(self, destination: Destination, calling_ae: str, timeout_s: float) -> None:
        self.destination = destination
        self.calling_ae = calling_ae
        self.timeout_s = timeout_s
        self._assoc = None
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)  # not a line per C-STORE in the job's log

    def _association(self):
        if self._assoc is not None and self._assoc.is_established:
            return self._assoc
        from pynetdicom import AE

        ae = AE(ae_title=self.calling_ae)
        for timeout in ("acse_timeout", "dimse_timeout", "network_timeout", "connection_timeout"):
            setattr(ae, timeout, self.timeout_s)
        for sop_class in (COMPREHENSIVE_SR, SECONDARY_CAPTURE):
            ae.add_requested_context(sop_class, list(SYNTAXES))
        d = self.destination
        assoc = ae.associate(d.host, d.port, ae_title=d.ae_title)
        if not assoc.is_established:
            why = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "not established"
            raise ConnectionError(f"association with {d.name} {why}")
        self._assoc = assoc
        return assoc

    def send(self, data: bytes, sop_class: str, uid: str = "") -> str | None:
        """None when the node acknowledged the object, else why not (nothing patient-identifying)."""
        from pydicom import dcmread

        try:
            assoc = self._association()
        except (ConnectionError, OSError) as exc:
            return str(exc) if isinstance(exc, ConnectionError) else f"cannot connect to {self.destination.name}"
        accepted = [c for c in assoc.accepted_contexts if c.abstract_syntax == sop_class]
        if not accepted:
            name = "Comprehensive SR" if sop_class == COMPREHENSIVE_SR else "Secondary Capture"
            return f"{self.destination.name} refused {name} Storage ({sop_class}) at association"
        try:
            status = assoc.send_c_store(dcmread(io.BytesIO(data)))
        except (RuntimeError, ValueError, OSError) as exc:
            self.close()
            return f"C-STORE failed ({type(exc).__name__})"
        code = getattr(status, "Status", None)
        if code is None:  # no answer: the association was aborted or timed out
            self.close()
            return f"no C-STORE response from {self.destination.name} (the association ended)"
        if int(code) in ACKNOWLEDGED:
            return None
        return f"C-STORE status 0x{int(code):04X}"

    def close(self) -> None:
        if self._assoc is not None:
            if self._assoc.is_established:
                self._assoc.release()
            self._assoc = None


class FolderSender:
    """Each object written as ``<SOP Instance UID>.dcm`` in a folder outside the lake, whole or not at all."""

    def __init__(self, destination: Destination) -> None:
        self.destination = destination

    def send(self, data: bytes, sop_class: str, uid: str = "") -> str | None:
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
            return f"cannot write to {folder} ({type(exc).__name__}: {exc.strerror})"
        return None

    def close(self) -> None:
        pass


def sender_for(destination: Destination, calling_ae: str, timeout_s: float):
    return NodeSender(destination, calling_ae, timeout_s) if destination.is_node else FolderSender(destination)
