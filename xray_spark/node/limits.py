"""The node's limits on what a peer may make it hold: addresses at accept, slots, PDUs, instances, time.

pynetdicom reads a PDU whole before anything looks at it, a C-STORE data set whole into memory,
and checks the calling address only once an A-ASSOCIATE-RQ is complete. A peer could hold every
slot with unfinished requests, or the node's memory with one declared length. Here:

* :class:`Gate` decides at ``accept()``: a peer whose address no allow-list entry names is closed
  at once, and one address holds at most ``dicom_node.max_associations_per_address`` connections;
* :func:`read_pdu` replaces the DUL's PDU reader: a PDU longer than the node allows (an
  A-ASSOCIATE-RQ over :data:`MAX_CONTROL_PDU`, a P-DATA-TF over the ``max_pdu`` the node announced)
  is refused from its 6-byte header, before its body is read; each PDU must arrive whole within
  ``pdu_timeout_seconds`` and the whole association end within ``association_timeout_seconds``;
  a malformed PDU is one log line, never a traceback;
* :class:`ReceivingFile` is where a C-STORE's data set is written as it arrives
  (pynetdicom's ``STORE_RECV_CHUNKED_DATASET``), in the spool's ``.receiving/``: an instance over
  ``image.max_file_bytes``, or one the disk cannot hold, stops being written at once and is
  answered with a failure status by :meth:`xray_spark.node.scp.Node.on_store`.

The node runs in a process of its own (``python -m xray_spark.node run``): :func:`install` sets
these into pynetdicom's module state once, for that process.
"""

from __future__ import annotations

import dataclasses
import errno
import io
import logging
import os
import secrets
import socket
import ssl
import struct
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any

log = logging.getLogger("xray_spark.node")

#: The largest A-ASSOCIATE-RQ (and any PDU but P-DATA-TF) read: 128 presentation contexts of
#: a few transfer syntaxes each take about 30 kB.
MAX_CONTROL_PDU = 64 << 10
P_DATA_TF = 0x04
PDU_TYPES = (0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07)


@dataclasses.dataclass(frozen=True)
class Limits:
    max_pdu: int
    max_instance_bytes: int
    pdu_timeout: float
    association_timeout: float
    receiving: str  # the spool's .receiving/
    on_tls_failure: Callable[[str], None] | None = None  # called with the peer's address when its TLS fails


_limits: list[Limits] = []


def install(limits: Limits) -> None:
    """Bound this process's pynetdicom: PDU reads, data sets written to the spool as they arrive."""
    import pynetdicom
    from pynetdicom import _config, dimse_messages
    from pynetdicom.dul import DULServiceProvider

    for owner, name in ((dimse_messages, "NamedTemporaryFile"), (DULServiceProvider, "_read_pdu_data")):
        if not hasattr(owner, name):  # another pynetdicom than the 3.0 these replace parts of (pyproject pins it)
            raise RuntimeError(
                f"pynetdicom {pynetdicom.__version__} has no {name}: the node's limits need pynetdicom 3.0"
            )
    _limits[:] = [limits]
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, OneLineFilter) for f in handler.filters):
            handler.addFilter(OneLineFilter())
    _config.STORE_RECV_CHUNKED_DATASET = True
    dimse_messages.NamedTemporaryFile = _receiving_file  # type: ignore[attr-defined]
    DULServiceProvider._read_pdu_data = read_pdu  # type: ignore[method-assign]


class ReceivingFile:
    """One data set being received, in ``.receiving/``; stops writing (and empties itself) when refused.

    ``refused`` says why once it is: over the size limit, or the disk refused a write. pynetdicom
    writes the preamble, the file meta and then each fragment, flushes, closes and unlinks it after
    the C-STORE handler has run; a kept instance is a hard link the handler made before that.
    """

    def __init__(self, folder: str, limit: int) -> None:
        self.name = os.path.join(folder, f"{secrets.token_hex(8)}.part")
        self.file = self  # pynetdicom calls .file.flush()
        self.limit = limit
        self.written = 0
        self.refused: str | None = None
        try:
            self._fh: Any = open(self.name, "xb")  # noqa: SIM115 - closed by pynetdicom through close()
        except OSError as exc:  # no room even for the file: the data set is counted, and refused at its end
            self._fh = None
            self.refused = disk_error(exc)

    def write(self, data: bytes) -> int:
        if self.refused is not None:
            self.written += len(data)
            return len(data)
        if self.written + len(data) > self.limit:
            self._refuse(f"the instance is over image.max_file_bytes={self.limit:,} bytes")
            self.written += len(data)
            return len(data)
        try:
            self._fh.write(data)
        except OSError as exc:
            self._refuse(disk_error(exc))
        self.written += len(data)
        return len(data)

    def flush(self) -> None:
        if self.refused is None:
            try:
                self._fh.flush()
            except OSError as exc:
                self._refuse(disk_error(exc))

    def tell(self) -> int:
        return self.written

    def sync(self) -> None:
        """Flush and fsync what was kept (before the instance is linked into the spool and answered Success)."""
        if self.refused is None:
            try:
                self._fh.flush()
                os.fsync(self._fh.fileno())
            except OSError as exc:
                self._refuse(disk_error(exc))

    def close(self) -> None:
        try:
            if self._fh is not None:
                self._fh.close()
        except OSError as exc:
            if self.refused is None:
                self._refuse(disk_error(exc))

    def _refuse(self, why: str) -> None:
        self.refused = why
        try:  # give the space back at once; the rest of the data set is counted, not kept
            if self._fh is not None:
                self._fh.truncate(0)
                self._fh.close()
        except OSError:
            pass


def disk_error(exc: OSError) -> str:
    """Why a write failed, in the words of the node's log (never a path)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the disk is full"
    return errno.errorcode.get(exc.errno or 0, type(exc).__name__)


def _receiving_file(*_args: Any, **_kwargs: Any) -> ReceivingFile:
    limits = _limits[0]
    return ReceivingFile(limits.receiving, limits.max_instance_bytes)


class Gate:
    """At ``accept()``: only allowed addresses, and at most ``per_address`` open connections from each."""

    def __init__(self, allowed_addresses: set[str] | None, per_address: int) -> None:
        self.allowed = allowed_addresses  # None: any (a loopback node without an allow-list)
        self.per_address = per_address
        self._open: dict[str, list[socket.socket]] = {}
        self._lock = threading.Lock()
        self._logged: dict[tuple[str, str], float] = {}
        self.refused = 0

    def verify(self, request: socket.socket, client_address: Any) -> bool:
        address = _plain(client_address[0] if isinstance(client_address, tuple) else str(client_address))
        with self._lock:
            if self.allowed is not None and address not in self.allowed:
                return self._refuse(address, "its address is not on dicom_node.allow")
            live = [s for s in self._open.get(address, []) if s.fileno() != -1]
            if len(live) >= self.per_address:
                self._open[address] = live
                return self._refuse(
                    address, f"it holds {len(live)} connections already (dicom_node.max_associations_per_address)"
                )
            self._open[address] = [*live, request]
            return True

    def _refuse(self, address: str, why: str) -> bool:
        self.refused += 1
        now = time.monotonic()
        if now - self._logged.get((address, why), -3600.0) >= 60:  # a flood is one line a minute
            self._logged[(address, why)] = now
            log.warning("connection from %s closed at accept: %s", address, why)
        return False


def _plain(address: str) -> str:
    import ipaddress

    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    return str(getattr(ip, "ipv4_mapped", None) or ip)


def _peer_address(sock: socket.socket) -> str:
    try:
        return _plain(str(sock.getpeername()[0]))
    except OSError:
        return "unknown"


def _largest(pdu_type: int, limits: Limits, established: bool) -> int:
    """The longest PDU read: a P-DATA-TF within an accepted association up to the ``max_pdu`` the node announced;
    anything else, and anything before the association is accepted, up to :data:`MAX_CONTROL_PDU`."""
    return limits.max_pdu if pdu_type == P_DATA_TF and established else MAX_CONTROL_PDU


def _recv_exactly(sock: socket.socket, n: int, deadline: float) -> bytes | None:
    """``n`` bytes from ``sock`` by ``deadline`` (monotonic), or None: closed, timed out or failed."""
    parts, got = [], 0
    while got < n:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        sock.settimeout(left)
        try:
            chunk = sock.recv(min(n - got, 1 << 16))
        except ssl.SSLError as exc:  # no trusted certificate, not TLS at all, a broken record: one line
            log.warning("a connection's TLS failed (%s): closed", exc.reason or exc)
            hook = _limits[0].on_tls_failure if _limits else None
            if hook is not None:
                hook(_peer_address(sock))
            return None
        except (OSError, TimeoutError):
            return None
        if not chunk:
            return None
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def read_pdu(dul: Any) -> None:
    """The DUL's PDU reader, bounded (replaces ``DULServiceProvider._read_pdu_data``).

    Puts the state machine's event for the PDU on the DUL's queue, as the original does; a PDU
    that is too long, too slow, late in a too-long association or malformed gives Evt17 (the
    connection closed) or Evt19 (an invalid PDU: A-ABORT), with one log line.
    """
    limits = _limits[0]
    if dul.__dict__.get("_xray_refused"):  # refused already: what the peer still sends is dropped unread
        _drop(dul)
        return
    assoc = dul.assoc
    started = assoc.__dict__.setdefault("_xray_started", time.monotonic())
    peer = f"{getattr(assoc.requestor, 'address', '?')}"
    end_of_association = started + limits.association_timeout
    deadline = min(time.monotonic() + limits.pdu_timeout, end_of_association)
    raw = dul.socket.socket
    before = raw.gettimeout()
    try:
        _read_bounded(dul, raw, peer, deadline, end_of_association, limits)
    finally:
        if raw.fileno() != -1:
            raw.settimeout(before)


def _read_bounded(
    dul: Any, raw: socket.socket, peer: str, deadline: float, end_of_association: float, limits: Limits
) -> None:
    header = _recv_exactly(raw, 6, deadline)
    if header is None:
        _closed(dul, peer, deadline, end_of_association, "before a PDU's header arrived")
        return
    pdu_type, _, length = struct.unpack(">BBL", header)
    if pdu_type not in PDU_TYPES:
        _refuse(dul, "Evt19", "association from %s: an unknown PDU type 0x%02X: aborted", peer, pdu_type)
        return
    # Sta1-3: no association accepted yet (the DUL leaves them when it sends the A-ASSOCIATE-AC, in this thread)
    largest = _largest(pdu_type, limits, dul.state_machine.current_state not in ("Sta1", "Sta2", "Sta3"))
    if length > largest:
        _refuse(
            dul, "Evt19",
            "association from %s: a PDU of type 0x%02X declares %d bytes, over the %d the node takes: aborted",
            peer, pdu_type, length, largest,
        )  # fmt: skip
        return
    body = _recv_exactly(raw, length, deadline)
    if body is None:
        _closed(dul, peer, deadline, end_of_association, f"during a PDU of {length:,} bytes")
        return
    try:
        pdu, event = dul._decode_pdu(bytearray(header + body))
    except Exception as exc:  # a malformed PDU is the peer's fault: one line, no traceback
        _refuse(dul, "Evt19", "association from %s: a malformed PDU (type 0x%02X): %s: aborted", peer, pdu_type, exc)
        return
    dul.event_queue.put(event)
    dul._recv_pdu.put(pdu)


def _closed(dul: Any, peer: str, deadline: float, end: float, when: str) -> None:
    now = time.monotonic()
    if now >= end:
        _refuse(dul, "Evt17", "association from %s: over dicom_node.association_timeout_seconds %s: closed", peer, when)
    elif now >= deadline:
        _refuse(
            dul,
            "Evt17",
            "association from %s: a PDU not whole within dicom_node.pdu_timeout_seconds (%s): closed",
            peer,
            when,
        )
    else:
        dul.event_queue.put("Evt17")


def _refuse(dul: Any, event: str, message: str, *args: Any) -> None:
    """One log line, the state machine's event, and nothing more read from this peer."""
    log.warning(message, *args)
    dul._xray_refused = True
    dul.event_queue.put(event)


def _drop(dul: Any) -> None:
    """Discard what a refused peer still sends (at most 64 KiB a call); its close ends the connection."""
    raw = dul.socket.socket
    try:
        raw.settimeout(0.1)
        data = raw.recv(1 << 16)
    except (OSError, TimeoutError):
        data = b""
    if not data:
        dul.event_queue.put("Evt17")


class OneLineFilter(logging.Filter):
    """pynetdicom logs a malformed value with its traceback: keep its message, as one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("pynetdicom") and record.exc_info:
            exc = record.exc_info[1]
            record.msg = f"{record.getMessage()} ({type(exc).__name__})"
            record.args = None
            record.exc_info = record.exc_text = None
        return True


#: Deflated Explicit VR Little Endian: the data set after the file meta is one deflate stream.
DEFLATED = "1.2.840.10008.1.2.1.99"
#: How much of a deflated data set is inflated to find its UIDs (they are among its first elements).
UID_WINDOW = 1 << 20


def dataset_uids(path: str) -> tuple[str, str]:
    """The SOP Class and SOP Instance UIDs the data set itself holds (not the request's, not its file meta).

    Read up to (0008,0018) only: no pixel data, no identifying element, and a deflated data set
    inflated no further than :data:`UID_WINDOW`. Empty strings when the data set holds neither.
    """
    from pydicom.filereader import _read_file_meta_info, read_dataset, read_preamble

    def past_uid(tag: Any, _vr: Any, _length: Any) -> bool:
        return int(tag) > 0x00080018

    with open(path, "rb") as fh:
        read_preamble(fh, False)
        syntax = str(_read_file_meta_info(fh).get("TransferSyntaxUID", ""))
        source: Any = fh
        if syntax == DEFLATED:
            source = io.BytesIO(zlib.decompressobj(-zlib.MAX_WBITS).decompress(fh.read(UID_WINDOW), UID_WINDOW))
        implicit, little = syntax == "1.2.840.10008.1.2", syntax != "1.2.840.10008.1.2.2"
        ds = read_dataset(source, implicit, little, stop_when=past_uid)
    return str(ds.get("SOPClassUID", "") or ""), str(ds.get("SOPInstanceUID", "") or "")
