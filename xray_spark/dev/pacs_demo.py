"""``make demo-pacs``: the round trip on one machine, with Orthanc as the hospital's PACS.

``up``: Orthanc started from a configuration of its own (under ``--dir``, outside the lake:
it holds the films' patient names), loaded with the synthetic DICOM export through its REST
API; the DICOM node started; Orthanc sends every study to it (``/modalities/xray/store``);
the node stopped. Then the Makefile runs the nightly flow on the node's spool, whose last
step delivers the results back to Orthanc. ``show``: Orthanc's instances per study by
modality (stdout) and the address of one study in Orthanc Explorer. ``down``: Orthanc stopped
by its pid.

Orthanc cannot bind its DICOM port to one address, so it is told to take C-STORE and C-ECHO
only from the node's AE title at 127.0.0.1 (``DicomAlwaysAllowStore`` off, the host checked),
and its HTTP side answers only this machine (``RemoteAccessAllowed`` off).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

from pydicom import dcmread

from xray_spark.dev.dicom_archive import write_dicom_archive
from xray_spark.node.scp import STORAGE_CLASSES

AE = "XRAY_SPARK"
PID_FILE = "orthanc.pid"


def _rest(http_port: int, method: str, path: str, body: bytes | None = None):
    request = urllib.request.Request(f"http://127.0.0.1:{http_port}{path}", data=body, method=method)
    with urllib.request.urlopen(request, timeout=600) as answer:
        return json.loads(answer.read().decode() or "null")


def _answers(http_port: int) -> bool:
    try:
        _rest(http_port, "GET", "/system")
        return True
    except OSError:
        return False


def orthanc_config(folder: Path, http_port: int, dicom_port: int, node_port: int) -> Path:
    config = {
        "Name": "xray-spark demo PACS",
        "StorageDirectory": str(folder / "db"),
        "IndexDirectory": str(folder / "db"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": "ORTHANC",
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomAlwaysAllowStore": False,
        "DicomAlwaysAllowEcho": False,
        "DicomCheckModalityHost": True,
        "DicomModalities": {"xray": [AE, "127.0.0.1", node_port]},
        "Plugins": [],
    }
    path = folder / "orthanc.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def start_orthanc(folder: Path, http_port: int, dicom_port: int, node_port: int) -> subprocess.Popen | None:
    """Orthanc from :func:`orthanc_config` in ``folder`` (its pid in ``orthanc.pid``), once it answers; else None."""
    config = orthanc_config(folder, http_port, dicom_port, node_port)
    with open(folder / "orthanc.log", "ab") as log:
        proc = subprocess.Popen(
            [shutil.which("Orthanc") or "Orthanc", str(config)], stdout=log, stderr=log, start_new_session=True
        )
    (folder / PID_FILE).write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + 60
    while not _answers(http_port):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            return None
        time.sleep(0.3)
    return proc


def up(args: argparse.Namespace) -> int:
    folder = Path(args.dir).resolve()
    binary = shutil.which("Orthanc")
    if binary is None:
        print("demo-pacs: error: Orthanc is not installed (apt-get install orthanc dcmtk)", file=sys.stderr)
        return 2
    if _answers(args.http_port):
        print(
            f"demo-pacs: error: something answers on 127.0.0.1:{args.http_port}: make demo-pacs-stop", file=sys.stderr
        )
        return 2
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    export = folder / "archive"
    if not (export / "export").is_dir():
        print(f"demo-pacs: writing {args.images} synthetic DICOM films to {export}", file=sys.stderr)
        write_dicom_archive(export, n_images=args.images, size=256, seed=29, labelled=0.0)
    if start_orthanc(folder, args.http_port, args.dicom_port, args.node_port) is None:
        print(f"demo-pacs: error: Orthanc did not start: see {folder / 'orthanc.log'}", file=sys.stderr)
        return 1
    films = sorted(p for p in (export / "export").rglob("*") if p.is_file() and p.name not in ("DICOMDIR",))
    loaded = refused = 0
    radiographs = []  # what a PACS routes to the node: the classes it takes (not the report, ...)
    for path in films:
        if path.read_bytes()[128:132] == b"DICM":
            try:
                answer = _rest(args.http_port, "POST", "/instances", path.read_bytes())
                loaded += 1
            except urllib.error.HTTPError:  # the export's file cut short on purpose
                refused += 1
                continue
            if str(dcmread(path, stop_before_pixels=True).SOPClassUID) in STORAGE_CLASSES:
                radiographs.append(answer["ID"])
    print(
        f"demo-pacs: Orthanc holds the export ({loaded} objects, {refused} refused as broken); sending it to the node",
        file=sys.stderr,
    )
    node = [sys.executable, "-m", "xray_spark.node"]
    state = ["--state-dir", str(folder / "node")]
    where = ["--spool", str(folder / "spool"), "--port", str(args.node_port), "--lake", args.lake]
    subprocess.run([*node, "start", *state, *where], check=True, stdout=subprocess.DEVNULL)
    try:
        body = json.dumps({"Resources": radiographs}).encode()
        _rest(args.http_port, "POST", "/modalities/xray/store", body)
    finally:
        subprocess.run([*node, "stop", *state], check=False)
    received = len(list((folder / "spool" / "incoming").glob("*.dcm")))
    print(f"demo-pacs: the node received {received} objects into {folder / 'spool'}", file=sys.stderr)
    return 0


def show(args: argparse.Namespace) -> int:
    """Orthanc's instances per study and modality, one line each (stdout), and one study's address."""
    studies = _rest(args.http_port, "GET", "/studies?expand")
    print("accession\tstudy_instance_uid\tinstances by modality")
    totals: Counter = Counter()
    for study in sorted(studies, key=lambda s: s["MainDicomTags"].get("AccessionNumber", "")):
        kinds: Counter = Counter()
        for series in study["Series"]:
            info = _rest(args.http_port, "GET", f"/series/{series}")
            kinds[info["MainDicomTags"].get("Modality", "?")] += len(info["Instances"])
        totals.update(kinds)
        tags = study["MainDicomTags"]
        counts = ", ".join(f"{n} {m}" for m, n in sorted(kinds.items()))
        print(f"{tags.get('AccessionNumber', '')}\t{tags.get('StudyInstanceUID', '')}\t{counts}")
    with_sr = [s for s in studies if any(_ours(args.http_port, x) for x in s["Series"])]
    print(f"demo-pacs: {len(studies)} studies; in all {dict(totals)}", file=sys.stderr)
    if with_sr:
        series = next(x for x in with_sr[0]["Series"] if _ours(args.http_port, x))
        first = _rest(args.http_port, "GET", f"/series/{series}")["Instances"][0]
        request = f"http://127.0.0.1:{args.http_port}/instances/{first}/file"
        with urllib.request.urlopen(request, timeout=60) as answer:
            (Path(args.dir) / "example-sr.dcm").write_bytes(answer.read())
        url = f"http://127.0.0.1:{args.http_port}/app/explorer.html#study?uuid={with_sr[0]['ID']}"
        print(f"demo-pacs: a study with its AI results in Orthanc Explorer: {url}", file=sys.stderr)
    print("demo-pacs: make demo-pacs-stop stops Orthanc", file=sys.stderr)
    return 0


def _ours(http_port: int, series: str) -> bool:
    """Whether a series is one of the product's SR series (not an SR the export held)."""
    tags = _rest(http_port, "GET", f"/series/{series}")["MainDicomTags"]
    return tags.get("Modality") == "SR" and tags.get("SeriesDescription", "").startswith("AI results")


def down(args: argparse.Namespace) -> int:
    pid_file = Path(args.dir) / PID_FILE
    if not pid_file.is_file():
        return 0
    pid = int(pid_file.read_text())
    try:
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            os.kill(pid, 0)
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    pid_file.unlink()
    print(f"demo-pacs: Orthanc (pid {pid}) stopped", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xray_spark.dev.pacs_demo", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("up", "show", "down"))
    parser.add_argument("--dir", default=".demo-pacs", help="Orthanc's files, the export and the spool")
    parser.add_argument("--lake", default="lake")
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--http-port", type=int, default=8042)
    parser.add_argument("--dicom-port", type=int, default=4242)
    parser.add_argument("--node-port", type=int, default=11112)
    args = parser.parse_args(argv)
    return {"up": up, "show": show, "down": down}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
