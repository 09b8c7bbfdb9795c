"""What a hostile peer can make the DICOM node hold: its memory for one huge instance, and how long a legitimate
C-ECHO waits while ten senders trickle.

    python bench/node_limits.py [--code DIR] [--label NAME] [--mib 600] [--out bench/results/node_limits_cpu2.json]

``--code`` runs the node of another checkout (``git worktree add /tmp/before <commit>``) to measure
before a change; the results of each ``--label`` are kept side by side in ``--out``.

1. One instance of ``--mib`` MiB (a 16-bit film) sent by dcmtk's ``dcmsend``: the node's peak
   resident memory (``VmHWM`` of its process) above its idle size, the answer, whether it was
   stored; with the node's defaults, and with ``image.max_file_bytes`` raised above the instance
   (so that it is received whole).
2. Ten connections from 127.0.0.1 that each send one byte of an A-ASSOCIATE-RQ and then nothing
   (the rest never comes): the seconds until a C-ECHO is answered, from 127.0.0.2 (another
   allowed address) and from 127.0.0.1 (theirs), tried every second for up to ``--cap`` s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import log, machine  # noqa: E402  (beside this file)

AE = "XRAY_SPARK"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    """The node of checkout ``code``, started and stopped by its command line."""

    def __init__(self, code: Path, root: Path, sets: list[str]) -> None:
        self.code, self.root, self.port = code, root, free_port()
        self.sets = [x for s in sets for x in ("--set", s)]

    def _cli(self, *args: str) -> subprocess.CompletedProcess:
        env = dict(os.environ, PYTHONPATH=str(self.code))
        argv = [sys.executable, "-m", "xray_spark.node", *args, "--state-dir", str(self.root / "state")]
        argv += ["--lake", str(self.root / "lake")]
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, cwd=self.code)

    def __enter__(self) -> Node:
        started = self._cli("start", "--spool", str(self.root / "spool"), "--port", str(self.port), *self.sets)
        assert started.returncode == 0, started.stderr[-2000:]
        return self

    def __exit__(self, *_: object) -> None:
        self._cli("stop")

    @property
    def pid(self) -> int:
        return int(json.loads((self.root / "state" / "server.pid").read_text())["pid"])

    def kib(self, field: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise KeyError(field)


def huge_film(path: Path, mib: int) -> Path:
    import numpy as np
    from pydicom.uid import ExplicitVRLittleEndian

    from xray_spark.dev.dicom_films import film

    side = int((mib * 2**20 / 2) ** 0.5)
    pixels = (np.arange(side * side, dtype=np.uint32) % 4096).astype(np.uint16).reshape(side, side)
    ds = film(pixels, bits_stored=12, PatientID="BENCH", ViewPosition="PA", BodyPartExamined="CHEST")
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    return path


def one_huge_instance(code: Path, path: Path, sets: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp, Node(code, Path(tmp), sets) as node:
        time.sleep(1)
        idle = node.kib("VmRSS")
        t0 = time.monotonic()
        sent = subprocess.run(
            ["dcmsend", "-aet", "PACS", "-aec", AE, "-nh", "127.0.0.1", str(node.port), str(path)],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        seconds = time.monotonic() - t0
        peak = node.kib("VmHWM")
        stored = list((Path(tmp) / "spool" / "incoming").glob("*.dcm"))
    return {
        "settings": sets,
        "instance_mib": round(path.stat().st_size / 2**20, 1),
        "idle_rss_mib": round(idle / 1024, 1),
        "peak_rss_mib": round(peak / 1024, 1),
        "peak_above_idle_mib": round((peak - idle) / 1024, 1),
        "dcmsend_exit": sent.returncode,
        "stored": bool(stored),
        "seconds": round(seconds, 1),
    }


def _echo(port: int, address: str) -> bool:
    from pynetdicom import AE as Requestor
    from pynetdicom.sop_class import Verification

    requestor = Requestor(ae_title="ECHO")
    requestor.add_requested_context(Verification)
    requestor.acse_timeout = requestor.network_timeout = 5
    with contextlib.suppress(Exception):
        assoc = requestor.associate("127.0.0.1", port, ae_title=AE, bind_address=(address, 0))
        if assoc.is_established:
            ok = assoc.send_c_echo().Status == 0
            assoc.release()
            return ok
    return False


def trickle(code: Path, cap: float) -> dict:
    import logging

    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
    out: dict = {}
    for address in ("127.0.0.2", "127.0.0.1"):
        with tempfile.TemporaryDirectory() as tmp, Node(code, Path(tmp), []) as node:
            socks = [socket.create_connection(("127.0.0.1", node.port), source_address=("127.0.0.1", 0))
                     for _ in range(10)]  # fmt: skip
            for s in socks:
                s.sendall(b"\x01")  # the first byte of an A-ASSOCIATE-RQ; the rest never comes
            t0 = time.monotonic()
            answered = None
            while time.monotonic() - t0 < cap:
                if _echo(node.port, address):
                    answered = round(time.monotonic() - t0, 1)
                    break
                time.sleep(1)
            for s in socks:
                s.close()
        out[f"echo_from_{address}_seconds"] = answered  # None: not answered within the cap
        log(f"C-ECHO from {address} while 10 trickle: {answered} s (cap {cap} s)")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--code", type=Path, default=ROOT, help="the checkout whose node is measured")
    parser.add_argument("--label", default="now")
    parser.add_argument("--mib", type=int, default=600)
    parser.add_argument("--cap", type=float, default=120.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "node_limits_cpu2.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = huge_film(Path(tmp) / "huge.dcm", args.mib)
        big = f"image.max_file_bytes={2 * args.mib * 2**20}"
        runs = {
            "defaults": one_huge_instance(args.code, path, []),
            "limit_above": one_huge_instance(args.code, path, [big]),
        }
    for name, run in runs.items():
        log(f"{args.label} {name}: {run}")
    result = {"machine": machine(), "huge_instance": runs, "trickle": trickle(args.code, args.cap)}
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    previous[args.label] = result
    args.out.write_text(json.dumps(previous, indent=2) + "\n")
    log(f"written {args.out}")


if __name__ == "__main__":
    main()
