"""The node under test and its real peers: dcmtk's dcmsend and storescp, Orthanc in a network namespace.

Every process started here is stopped by its pid (the node through its pid file, the others
by their Popen handle) when its context ends, whatever the test did.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from pydicom import dcmread

from xray_spark import daemon
from xray_spark.session import free_port

from .jobs import job_env

AE = "XRAY_SPARK"


def need(program: str) -> str:
    """The program's path; the test is skipped without it, and fails under CI (``.ci/run`` installs it)."""
    found = shutil.which(program)
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{program} is missing and CI=true: .ci/run installs Debian's dcmtk and orthanc")
        pytest.skip(f"{program} is not installed (Debian packages dcmtk, orthanc)")
    return found


def need_root(why: str) -> None:
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true runs as root: {why} needs it")
        pytest.skip(f"{why} needs root")


def node_command(command: str, state_dir: Path, *args: object) -> list[str]:
    return [sys.executable, "-m", "xray_spark.node", command, "--state-dir", str(state_dir), *map(str, args)]


class Node:
    """A node started by the test (``python -m xray_spark.node start``), with its spool and state folder."""

    def __init__(self, root: Path, *, port: int | None = None, prefix: Sequence[str] = (), extra: Sequence = ()):
        self.root = root
        self.state = root / "state"
        self.spool = root / "spool"
        self.lake = root / "lake"
        self.port = port or free_port()
        self.prefix = list(prefix)  # e.g. ["ip", "netns", "exec", NS]: the node in a namespace
        self.extra = [str(x) for x in extra]

    def cli(self, command: str, *args: object, check: bool = True) -> subprocess.CompletedProcess:
        argv = [*self.prefix, *node_command(command, self.state, "--lake", self.lake, *args)]
        result = subprocess.run(argv, env=job_env(), capture_output=True, text=True, timeout=120)
        if check:
            assert result.returncode == 0, f"node {command}: exit {result.returncode}\n{result.stderr[-2000:]}"
        return result

    def start(self) -> str:
        args = ["--spool", self.spool, "--port", self.port, *self.extra]
        return self.cli("start", *args).stdout.strip()

    def pid(self) -> int | None:
        record = daemon.running(str(self.state))
        return None if record is None else int(record["pid"])

    def stop(self) -> None:
        self.cli("stop", check=False)
        assert self.pid() is None

    def log(self) -> str:
        return (self.state / daemon.LOG_FILE).read_text(errors="replace")

    def received(self) -> list[Path]:
        incoming = self.spool / "incoming"
        return sorted(incoming.iterdir()) if incoming.is_dir() else []


@contextlib.contextmanager
def running_node(root: Path, **kwargs) -> Iterator[Node]:
    node = Node(root, **kwargs)
    node.start()
    try:
        yield node
    finally:
        pid = node.pid()
        node.cli("stop", check=False)
        if pid is not None:  # stop failed: the test still leaves nothing running
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, 9)


def dcmsend(port: int, paths: Sequence[Path], *, calling: str = "PACS", called: str = AE, timeout: float = 300):
    """dcmtk's dcmsend: each file's own transfer syntax proposed, never decompressed; all files in one run."""
    argv = [need("dcmsend"), "-v", "-aet", calling, "-aec", called, "-nh", "-dn", "127.0.0.1", str(port)]
    argv += [str(p) for p in paths]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def instance_digest(path: Path) -> tuple[str, str]:
    """(SOP Instance UID, SHA-256 of the pixel data): what must arrive unchanged.

    A compressed film's encapsulated stream byte for byte; native pixels by their values in
    little-endian order (dcmsend offers Explicit Little Endian first for a Big Endian file, and
    the node takes the sender's first choice, so those bytes arrive swapped, the values the same).
    """
    ds = dcmread(path)
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        data = ds.PixelData
    else:
        data = ds.pixel_array.astype(ds.pixel_array.dtype.newbyteorder("<")).tobytes()
    return str(ds.SOPInstanceUID), hashlib.sha256(data).hexdigest()


def digests(paths: Sequence[Path]) -> dict[str, str]:
    out = {}
    for path in paths:
        uid, digest = instance_digest(path)
        out[uid] = digest
    return out


# -- Orthanc, in a network namespace of the test's own -------------------------------------------------

ORTHANC_HTTP = 8042


@contextlib.contextmanager
def network_namespace() -> Iterator[str]:
    """A namespace with only its own loopback: what listens in it is unreachable from anywhere else."""
    need_root("a network namespace (ip netns)")
    need("ip")
    name = f"xray-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def in_namespace(namespace: str) -> list[str]:
    return ["ip", "netns", "exec", namespace]


#: Debian's orthanc-dicomweb: Orthanc's DICOMweb plugin (QIDO-RS, WADO-RS, STOW-RS under /dicom-web/).
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


@contextlib.contextmanager
def orthanc(
    root: Path,
    namespace: str,
    modalities: dict[str, list],
    *,
    dicomweb: bool = False,
    users: dict[str, str] | None = None,
    more: dict | None = None,
) -> Iterator[subprocess.Popen]:
    """Orthanc from a configuration of its own (never the packaged service), in ``namespace``; with ``dicomweb`` its
    DICOMweb plugin at ``/dicom-web/``; with ``users`` (name: password) every HTTP call needs Basic authentication;
    ``more``: further configuration (DICOM over TLS, say)."""
    binary = need("Orthanc")
    if dicomweb and not DICOMWEB_PLUGIN.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{DICOMWEB_PLUGIN} is missing under CI=true: apt-get install orthanc-dicomweb")
        pytest.skip("Orthanc's DICOMweb plugin is not installed (apt-get install orthanc-dicomweb)")
    storage = root / "orthanc"
    storage.mkdir(exist_ok=True)  # a restart keeps what the earlier Orthanc stored
    config = {
        "Name": "xray-spark-test",
        "StorageDirectory": str(storage / "db"),
        "IndexDirectory": str(storage / "db"),
        "HttpPort": ORTHANC_HTTP,
        "DicomPort": 4242,
        "DicomAet": "ORTHANC",
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": bool(users),
        "RegisteredUsers": users or {},
        "DicomModalities": modalities,
        "Plugins": [str(DICOMWEB_PLUGIN)] if dicomweb else [],
        "DicomWeb": {"Enable": dicomweb, "Root": "/dicom-web/"},
        "StableAge": 1,
        **(more or {}),
    }
    auth = next(iter((users or {}).items()), None)
    path = storage / "orthanc.json"
    path.write_text(json.dumps(config))
    log = open(storage / "orthanc.log", "ab")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([*in_namespace(namespace), binary, str(path)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while orthanc_rest(namespace, "GET", "/system", check=False, auth=auth) is None:
            assert proc.poll() is None and time.monotonic() < deadline, (storage / "orthanc.log").read_text()[-2000:]
            time.sleep(0.3)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def orthanc_rest(
    namespace: str,
    method: str,
    path: str,
    body: bytes | None = None,
    *,
    check: bool = True,
    auth: tuple[str, str] | None = None,
):
    """One REST call to the Orthanc in ``namespace``, made from inside it (its port is reachable only there)."""
    headers = {"Authorization": basic_auth(*auth)} if auth else {}
    script = (
        "import sys, urllib.request\n"
        "data = sys.stdin.buffer.read() or None\n"
        f"req = urllib.request.Request('http://127.0.0.1:{ORTHANC_HTTP}{path}', data=data, method='{method}',"
        f" headers={headers!r})\n"
        "print(urllib.request.urlopen(req, timeout=600).read().decode())\n"
    )
    result = subprocess.run(
        [*in_namespace(namespace), sys.executable, "-c", script], input=body or b"", capture_output=True, timeout=900
    )
    if result.returncode != 0:
        assert not check, result.stderr.decode(errors="replace")[-2000:]
        return None
    return json.loads(result.stdout.decode() or "null")


CLONE_NEWNET = 0x40000000


@contextlib.contextmanager
def bridge(namespace: str, port: int, on_bytes: Callable[[int], None] | None = None) -> Iterator[int]:
    """A port on the host's 127.0.0.1 that leads to ``port`` on ``namespace``'s loopback, and nowhere else.

    One thread of this process enters the namespace (``setns`` moves only the calling thread) and
    forwards each connection accepted on the host side to a connection it opens inside. ``on_bytes``
    is called with the bytes clients have sent so far: a test can stop the peer part-way through a transfer.
    """
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    stop, ready, failed = threading.Event(), threading.Event(), []

    def forward() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        with open(f"/var/run/netns/{namespace}") as fh:
            if libc.setns(fh.fileno(), CLONE_NEWNET) != 0:
                failed.append(os.strerror(ctypes.get_errno()))
        ready.set()
        peers: dict[socket.socket, socket.socket] = {}
        clients: set[socket.socket] = set()
        sent = 0
        while not stop.is_set() and not failed:
            readable, _, _ = select.select([listener, *peers], [], [], 0.1)
            for sock in readable:
                if sock is listener:
                    client, _ = listener.accept()
                    client.setblocking(True)
                    try:
                        inside = socket.create_connection(("127.0.0.1", port), timeout=5)
                    except OSError:
                        client.close()
                        continue
                    peers[client], peers[inside] = inside, client
                    clients.add(client)
                    continue
                if sock not in peers:
                    continue
                try:
                    data = sock.recv(1 << 16)
                    if data:
                        peers[sock].sendall(data)
                except OSError:
                    data = b""
                if not data:
                    other = peers.pop(sock)
                    peers.pop(other, None)
                    clients.discard(sock)
                    clients.discard(other)
                    sock.close()
                    other.close()
                elif sock in clients and on_bytes is not None:
                    sent += len(data)
                    on_bytes(sent)
        for sock in peers:
            sock.close()

    thread = threading.Thread(target=forward, name=f"bridge-{namespace}-{port}", daemon=True)
    thread.start()
    ready.wait(10)
    assert not failed, f"setns into {namespace}: {failed[0]}"
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(10)
        listener.close()


def basic_auth(user: str, password: str) -> str:
    import base64

    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def rest(port: int, method: str, path: str, body: bytes | None = None, *, auth: tuple[str, str] | None = None):
    """One call to Orthanc's REST API through a :func:`bridge` port; the JSON answer (or raw bytes for files)."""
    import urllib.request

    headers = {"Authorization": basic_auth(*auth)} if auth else {}
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=120) as answer:
        data = answer.read()
    return data if path.endswith("/file") else json.loads(data.decode() or "null")


#: Java 17's XML limits stop pixelmed's compiled XSL templates ("JAXP0801002: the compiler encountered an XPath
#: expression containing 'N' operators that exceeds the limit"); the validator's own JVM lifts them.
PIXELMED_JAVA_OPTIONS = "-Djdk.xml.xpathExprOpLimit=0 -Djdk.xml.xpathExprGrpLimit=0 -Djdk.xml.xpathTotalOpLimit=0"


def _findings(lines: str, error: str, warning: str) -> tuple[list[str], list[str]]:
    rows = [line.strip() for line in lines.splitlines()]
    return [r for r in rows if r.startswith(error)], [r for r in rows if r.startswith(warning)]


def dciodvfy(path: Path) -> tuple[list[str], list[str]]:
    """dicom3tools' IOD check of one object: (error lines, warning lines)."""
    done = subprocess.run([need("dciodvfy"), str(path)], capture_output=True, text=True, timeout=120)
    return _findings(done.stdout + done.stderr, "Error", "Warning")


def sr_validator(path: Path) -> tuple[list[str], list[str]]:
    """pixelmed's DicomSRValidator with its template check (``-checktemplateid``): (error lines, warning lines)."""
    env = {**os.environ, "JAVA_TOOL_OPTIONS": PIXELMED_JAVA_OPTIONS}
    command = [need("DicomSRValidator"), "-checktemplateid", str(path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    output = done.stdout + done.stderr
    assert "Root Template Validation Complete" in output, output[-2000:]  # the validator ran to its end
    return _findings(output, "Error", "Warning")


def make_pki(folder: Path) -> dict[str, Path]:
    """A test's certificate authority with openssl, as a site would make one (docs/conformance.md): the CA, a
    server certificate for 127.0.0.1 and localhost, a client certificate it signed, and a stranger's self-signed
    certificate. Paths by name: ca, server, server_key, client, client_key, stranger, stranger_key."""
    openssl = need("openssl")
    folder.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=folder, check=True, capture_output=True, timeout=60)

    def signed(name: str, usage: str) -> None:
        run(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={name}",
        )
        (folder / f"{name}.ext").write_text(f"subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage={usage}\n")
        run(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
        )  # fmt: skip

    for name in ("ca", "stranger"):
        run(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem",
            "-days", "2", "-subj", f"/CN=xray-spark test {name}",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "subjectAltName=IP:127.0.0.1",
        )  # fmt: skip
    signed("server", "serverAuth")
    signed("client", "clientAuth")
    for key in folder.glob("*.key"):
        key.chmod(0o600)
    names = ("ca", "server", "client", "stranger")
    return {**{n: folder / f"{n}.pem" for n in names}, **{f"{n}_key": folder / f"{n}.key" for n in names}}
