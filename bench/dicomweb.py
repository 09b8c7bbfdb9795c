"""DICOMweb against classic DICOM on the same objects: STOW-RS and C-STORE sends, a WADO-RS pull.

    python bench/dicomweb.py [--films 100] [--side 512] [--repeats 2] [--out bench/results/dicomweb_cpu2.json]

Orthanc with its DICOMweb plugin (Debian's ``orthanc`` and ``orthanc-dicomweb``) runs in a
network namespace of the bench's own (root needed), reached through loopback bridges, as in the
tests. The objects are Secondary Captures (what delivery sends beside its SRs) of ``--side`` px,
16-bit words, uncompressed; each send gets copies
with new UIDs, so Orthanc stores every one. Sends use the product's senders
(:class:`xray_spark.deliver.send.NodeSender` over one association,
:class:`xray_spark.deliver.send.DicomWebSender`, one request per instance); the pull is
:func:`xray_spark.node.pull.run_pull` of everything Orthanc holds into an empty spool.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from pydicom import uid

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

from pipeline import log, machine  # noqa: E402  (beside this file)

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def _films(n: int, side: int):
    from xray_spark.dev.dicom_films import encode, film

    rng = np.random.default_rng(3)
    base = film(
        (rng.integers(0, 4096, (side, side))).astype(np.uint16),
        bits_stored=12,
        PatientID="BENCH0001",
        StudyDate=time.strftime("%Y%m%d"),
        BodyPartExamined="CHEST",
        ViewPosition="PA",
    )
    out = []
    for _ in range(n):
        ds = copy.deepcopy(base)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid.generate_uid()
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE  # what delivery sends
        ds.Modality = "OT"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = uid.generate_uid(), uid.generate_uid()
        out.append((str(ds.SOPInstanceUID), encode(ds, "explicit-le")))
    return out


def _send(sender, films) -> float:
    started = time.perf_counter()
    for sop, data in films:
        failure = sender.send(data, SECONDARY_CAPTURE, sop)
        if failure is not None:
            raise SystemExit(f"send failed: {failure}")
    sender.close()
    return time.perf_counter() - started


def main() -> int:
    from tests.dicom_peers import ORTHANC_HTTP, bridge, network_namespace, orthanc
    from xray_spark.config import DeliverSettings, DicomWebSourceSettings
    from xray_spark.deliver.send import DicomWebSender, NodeSender
    from xray_spark.destinations import parse_destination
    from xray_spark.node.pull import run_pull
    from xray_spark.spool import open_spool

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--films", type=int, default=100)
    parser.add_argument("--side", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "dicomweb_cpu2.json"))
    args = parser.parse_args()
    runs: dict[str, list[float]] = {"c_store": [], "stow_rs": []}
    megabytes = 0.0
    with tempfile.TemporaryDirectory() as work:
        tmp = Path(work)
        with (
            network_namespace() as ns,
            bridge(ns, 4242) as dicom_port,
            bridge(ns, ORTHANC_HTTP) as http,
            orthanc(tmp, ns, {}, dicomweb=True),
        ):
            options = DeliverSettings(timeout_seconds=120)
            for i in range(args.repeats):
                for kind in ("c_store", "stow_rs"):
                    films = _films(args.films, args.side)
                    megabytes = sum(len(d) for _, d in films) / 1e6
                    if kind == "c_store":
                        sender = NodeSender(parse_destination(f"ORTHANC@127.0.0.1:{dicom_port}"), options)
                    else:
                        sender = DicomWebSender(
                            parse_destination(f"dicomweb:http://127.0.0.1:{http}/dicom-web"), options
                        )
                    seconds = _send(sender, films)
                    runs[kind].append(seconds)
                    log(f"run {i + 1} {kind}: {args.films} films, {megabytes:.0f} MB in {seconds:.1f} s")
            url = f"http://127.0.0.1:{http}/dicom-web"
            source = DicomWebSourceSettings(url=url, max_films=100000, modalities=["OT"])
            spool = open_spool(str(tmp / "spool"), None)
            started = time.perf_counter()
            pulled = run_pull(source, spool)
            pull_seconds = time.perf_counter() - started
    held = 2 * args.repeats * args.films
    assert pulled.stored == held, dataclasses.asdict(pulled)
    best = {k: min(v) for k, v in runs.items()}
    result = {
        "what": "the same synthetic DX films to Orthanc by C-STORE and by STOW-RS, and all of them pulled by WADO-RS",
        "machine": machine(),
        "films_per_send": args.films,
        "film_side_px": args.side,
        "megabytes_per_send": round(megabytes, 1),
        "seconds": {k: [round(s, 2) for s in v] for k, v in runs.items()},
        "films_per_second": {k: round(args.films / s, 1) for k, s in best.items()},
        "pull": {
            "films": pulled.stored,
            "seconds": round(pull_seconds, 1),
            "films_per_second": round(pulled.stored / pull_seconds, 1),
        },
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
