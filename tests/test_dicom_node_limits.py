"""The DICOM node against senders who lie, trickle, flood or overfill: raw sockets, pynetdicom, dcmtk, 127.0.0.x."""

from __future__ import annotations

import contextlib
import io
import socket
import struct
import time
from pathlib import Path

import pytest
from pydicom import dcmread, dcmwrite

from xray_spark.dev.dicom_films import encode, film

from . import corpus
from .dicom_peers import AE, dcmsend, running_node

pytestmark = pytest.mark.usefixtures("pynetdicom_quiet")


@pytest.fixture
def pynetdicom_quiet():
    import logging

    level = logging.getLogger("pynetdicom").level
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
    yield
    logging.getLogger("pynetdicom").setLevel(level)


def _film_file(folder: Path, i: int, size: int = 64) -> Path:
    ds = film(
        corpus.chest_like(size, seed=i),
        bits_stored=8,
        PatientID=f"ZZLIAR{i:03d}",
        ViewPosition="PA",
        BodyPartExamined="CHEST",
    )
    path = folder / f"film{i}.dcm"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(ds, "explicit-le"))
    return path


def _relabelled(path: Path, dest: Path, *, instance: str | None = None, sop_class: str | None = None) -> Path:
    """The same data set under a file meta (which the sender's request is made from) that names another instance."""
    ds = dcmread(path)
    if instance:
        ds.file_meta.MediaStorageSOPInstanceUID = instance
    if sop_class:
        ds.file_meta.MediaStorageSOPClassUID = sop_class
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=False)  # True would make the file meta agree with the data set
    dest.write_bytes(buffer.getvalue())
    meta = dcmread(dest, stop_before_pixels=True).file_meta
    assert (instance or sop_class) in (meta.MediaStorageSOPInstanceUID, meta.MediaStorageSOPClassUID)
    return dest


def _send_files(port: int, paths: list[Path], calling: str = "PACS", address: str = "127.0.0.1") -> list[int]:
    """Each file sent as its bytes stand, its request made from its file meta (as a PACS that lies would)."""
    from pynetdicom import AE as Requestor
    from pynetdicom import _config
    from pynetdicom.sop_class import ComputedRadiographyImageStorage, DigitalXRayImageStorageForPresentation

    requestor = Requestor(ae_title=calling)
    for sop_class in (ComputedRadiographyImageStorage, DigitalXRayImageStorageForPresentation):
        requestor.add_requested_context(sop_class, "1.2.840.10008.1.2.1")
    before = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        assoc = requestor.associate("127.0.0.1", port, ae_title=AE, bind_address=(address, 0))
        assert assoc.is_established
        statuses = [int(assoc.send_c_store(str(p)).Status) for p in paths]
        assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = before
    return statuses


def test_a_sender_that_names_one_film_by_anothers_uid_is_refused_and_loses_nothing(tmp_path):
    a, b = _film_file(tmp_path / "export", 1), _film_file(tmp_path / "export", 2)
    uid_a, uid_b = (str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in (a, b))
    a_as_b = _relabelled(a, tmp_path / "a-as-b.dcm", instance=uid_b)
    cr = "1.2.840.10008.5.1.4.1.1.1"
    a_as_cr = _relabelled(a, tmp_path / "a-as-cr.dcm", sop_class=cr)  # a DX data set sent as CR
    with running_node(tmp_path / "node") as node:
        statuses = _send_files(node.port, [a_as_b, a_as_cr, b, a])
        log = node.log()
        received = {p.name: p.read_bytes() for p in node.received()}
    assert statuses == [0x0117, 0xA900, 0x0000, 0x0000]
    assert "SOP Instance UID is not the request's" in log and "SOP Class UID is not the request's" in log
    assert set(received) == {f"{uid_a}.dcm", f"{uid_b}.dcm"}
    assert dcmread(io.BytesIO(received[f"{uid_b}.dcm"])).SOPInstanceUID == uid_b  # the genuine B, not A
    assert dcmread(io.BytesIO(received[f"{uid_b}.dcm"])).PixelData == dcmread(b).PixelData


def test_an_instance_over_the_size_limit_is_refused_while_it_arrives_and_nothing_is_kept(tmp_path):
    big = _film_file(tmp_path / "export", 3, size=1200)  # 1.4 MB of pixels
    small = _film_file(tmp_path / "export", 4)
    with running_node(tmp_path / "node", extra=["--set", "image.max_file_bytes=1000000"]) as node:
        sent = dcmsend(node.port, [big, small])
        log = node.log()
        assert [p.name for p in node.received()] == [f"{dcmread(small, stop_before_pixels=True).SOPInstanceUID}.dcm"]
        assert not list((node.spool / ".receiving").iterdir())
    assert "Refused: OutOfResources" in sent.stderr
    assert "not stored (the instance is over image.max_file_bytes=1,000,000 bytes): answered Out of Resources" in log


def _rq_header(length: int) -> bytes:
    return struct.pack(">BBL", 0x01, 0, length)


def _connect(port: int, address: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(address, 0))
    return sock


def _closed_by_peer(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        while sock.recv(4096):
            pass  # an A-ABORT or A-ASSOCIATE-RJ may come first
    except TimeoutError:
        return False
    except OSError:
        return True
    return True


def _echo(port: int, calling: str, address: str) -> tuple[bool, float]:
    from pynetdicom import AE as Requestor
    from pynetdicom.sop_class import Verification

    requestor = Requestor(ae_title=calling)
    requestor.add_requested_context(Verification)
    requestor.acse_timeout = requestor.network_timeout = 30
    t0 = time.monotonic()
    assoc = requestor.associate("127.0.0.1", port, ae_title=AE, bind_address=(address, 0))
    ok = assoc.is_established and assoc.send_c_echo().Status == 0
    if assoc.is_established:
        assoc.release()
    return ok, time.monotonic() - t0


def test_strangers_tricklers_and_giant_pdus_hold_no_slot_and_stop_ends_on_time(tmp_path):
    """Ten connections from an address not on the allow-list, ten from the PACS's own address trickling an
    A-ASSOCIATE-RQ, a request declaring 256 MiB, garbage PDUs: the allowed peers are answered at once, each bad PDU is
    one log line, and stop ends within its timeout however the peers behave."""
    allow = ["--allow", "PACS@127.0.0.1", "--allow", "ECHO@127.0.0.2"]
    settings = [
        "--set",
        "dicom_node.max_associations_per_address=4",
        "--set",
        "dicom_node.pdu_timeout_seconds=4",
        "--set",
        "dicom_node.stop_timeout_seconds=2",
    ]
    sockets: list[socket.socket] = []
    with running_node(tmp_path / "node", extra=[*allow, *settings]) as node:
        try:
            strangers = [_connect(node.port, "127.0.0.3") for _ in range(10)]
            sockets += strangers
            for sock in strangers:
                sock.sendall(_rq_header(68))  # an unfinished request
            assert all(_closed_by_peer(sock, 5) for sock in strangers)  # closed at accept
            tricklers = [_connect(node.port, "127.0.0.1") for _ in range(10)]
            sockets += tricklers
            for sock in tricklers:
                sock.sendall(b"\x01")  # one byte of a header; the rest never comes
            ok, waited = _echo(node.port, "ECHO", "127.0.0.2")
            assert ok and waited < 3, f"a legitimate C-ECHO waited {waited:.1f} s"
            # Four tricklers hold their address's slots; the six others were closed at accept.
            assert sum(_closed_by_peer(sock, 1) for sock in tricklers) >= 6
            # ... and each PDU must be whole within 4 s: then the PACS's own address is free again.
            time.sleep(4.5)
            ok, _ = _echo(node.port, "PACS", "127.0.0.1")
            assert ok
            giant = _connect(node.port, "127.0.0.2")
            sockets.append(giant)
            giant.sendall(_rq_header(256 << 20) + b"\x00" * 4096)
            assert _closed_by_peer(giant, 5)
            for garbage in (b"\x09\x00\x00\x00\x00\x04abcd", _rq_header(40) + b"\xff" * 40):
                sock = _connect(node.port, "127.0.0.2")
                sockets.append(sock)
                sock.sendall(garbage)
                assert _closed_by_peer(sock, 5)
            stalled = [_connect(node.port, "127.0.0.2") for _ in range(3)]
            sockets += stalled
            for sock in stalled:
                sock.sendall(_rq_header(68)[:3])
            time.sleep(0.5)
            t0 = time.monotonic()
            node.stop()
            stopped_in = time.monotonic() - t0
            log = node.log()
        finally:
            for sock in sockets:
                with contextlib.suppress(OSError):
                    sock.close()
    assert stopped_in < 2 + 10, f"stop took {stopped_in:.1f} s"
    assert "connection from 127.0.0.3 closed at accept: its address is not on dicom_node.allow" in log
    assert log.count("connection from 127.0.0.3 closed at accept") == 1  # a flood is one line a minute
    assert "(dicom_node.max_associations_per_address)" in log
    assert "declares 268435456 bytes, over the 65536 the node takes: aborted" in log
    assert "an unknown PDU type 0x09" in log and "a malformed PDU (type 0x01)" in log
    assert "Traceback" not in log


def test_two_starts_at_once_make_one_node_that_stop_stops_and_a_taken_port_is_one_line(tmp_path):
    import subprocess
    import threading

    from .dicom_peers import Node
    from .jobs import job_env

    node = Node(tmp_path / "node")
    results: list[subprocess.CompletedProcess] = []

    def start() -> None:
        results.append(node.cli("start", "--spool", node.spool, "--port", node.port, check=False))

    starters = [threading.Thread(target=start) for _ in range(2)]
    for t in starters:
        t.start()
    for t in starters:
        t.join(timeout=120)
    try:
        assert [r.returncode for r in results] == [0, 0], [r.stderr[-500:] for r in results]
        assert results[0].stdout == results[1].stdout  # the second found the first one running
        nodes = subprocess.run(
            ["pgrep", "-f", f"xray_spark.node run --state-dir {node.state}"], capture_output=True, text=True
        )
        assert len(nodes.stdout.split()) == 1, nodes.stdout
        other = Node(tmp_path / "other", port=node.port)
        taken = other.cli("start", "--spool", other.spool, "--port", other.port, check=False)
        assert taken.returncode == 2
        lines = taken.stderr.strip().splitlines()
        assert len(lines) == 1 and f"port {node.port} on 127.0.0.1 is in use by another process" in lines[0], lines
    finally:
        node.stop()
    status = subprocess.run([*node_status(node)], env=job_env(), capture_output=True, text=True, timeout=60)
    assert status.returncode == 3


def node_status(node) -> list[str]:
    from .dicom_peers import node_command

    return node_command("status", node.state)
