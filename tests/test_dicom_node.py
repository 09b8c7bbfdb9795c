"""The DICOM node against real peers on 127.0.0.1: dcmtk's dcmsend, Orthanc; faults; a night from its spool."""

from __future__ import annotations

import errno
import json
import os
import re
import shlex
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pyspark.sql import functions as F

from xray_spark.dev.dicom_archive import write_dicom_archive
from xray_spark.dev.dicom_films import SYNTAXES, encode, film
from xray_spark.errors import UsageError
from xray_spark.lake import Lake
from xray_spark.prepare import PrepareInputs, run_prepare
from xray_spark.spool import Spool, open_spool

from . import corpus
from .conftest import DISPLAY, ROOT, TEST_OVERRIDES, make_settings
from .corpus import PHI
from .dicom_peers import (
    AE,
    Node,
    dcmsend,
    digests,
    in_namespace,
    need,
    need_root,
    network_namespace,
    node_command,
    orthanc,
    orthanc_rest,
    running_node,
)
from .jobs import checked, job_env, run_in_process, run_job

KEY = "a-node-test-key-that-is-long-enough-42"


def _films(folder: Path, n: int, *, size: int = 64, syntax: str = "explicit-le", first: int = 0) -> list[Path]:
    """``n`` chest films with identifying headers, one file each, named after their patients."""
    paths = []
    for i in range(first, first + n):
        pixels = corpus.chest_like(size, seed=i)
        ds = film(pixels, bits_stored=8, PatientID=f"ZZNODE{i:05d}", ViewPosition="PA", BodyPartExamined="CHEST")
        for key, value in PHI.items():
            setattr(ds, key, value)
        path = folder / f"ZZNODE{i:05d}" / "IM0"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode(ds, syntax))
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The DICOM demo archive, and one film in each of the 12 transfer syntaxes a PACS exports."""
    root = tmp_path_factory.mktemp("node-demo")
    films = write_dicom_archive(root, n_images=30, size=64, seed=9, labelled=0.8)
    extra = root / "export" / "SYNTAXES"
    extra.mkdir()
    for k, name in enumerate(SYNTAXES):
        bits = 8 if name == "jpeg-baseline" else 12
        pixels = corpus.chest_like(64, seed=100 + k).astype(np.uint16) * (16 if bits == 12 else 1)
        ds = film(pixels.astype(np.uint8 if bits == 8 else np.uint16), bits_stored=bits, PatientID="ZZSYNTAX01")
        for key, value in {**PHI, "ViewPosition": "PA", "BodyPartExamined": "CHEST"}.items():
            setattr(ds, key, value)
        (extra / f"IM{k:04d}").write_bytes(encode(ds, name))
    export = root / "export"
    sendable = sorted(p for p in export.rglob("*") if p.is_file() and p.name not in ("DICOMDIR", "README.TXT"))
    # Every radiograph storage object (the CT slice is a CR object of modality CT: prepare skips it), not the report.
    radiographs = [p for p in sendable if p.parent.name != "OTHER" or p.name in ("LAT0001", "ABD0001", "CT0001")]
    syntaxes = Counter(str(dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID) for p in radiographs)
    assert set(syntaxes) == {uid for uid, _ in SYNTAXES.values()}, syntaxes
    return root, films, sendable, radiographs


def test_dcmsend_delivers_every_radiograph_unchanged_and_prepare_stores_what_it_stores_from_the_folder(
    spark, demo, tmp_path, monkeypatch
):
    root, films, sendable, radiographs = demo
    with running_node(tmp_path / "node") as node:
        sent = dcmsend(node.port, sendable)
        # The report is refused at negotiation (no presentation context), the file cut short cannot be sent.
        assert f"with status SUCCESS  : {len(radiographs)}" in sent.stderr
        assert "NOT sent to the peer   : 2" in sent.stderr
        received = node.received()
        assert "PACS@127.0.0.1" in node.log() and f"{len(radiographs)} stored" in node.log()
    assert digests(received) == digests(radiographs)  # every SOP instance, its pixel data byte for byte
    assert {p.name for p in received} == {f"{uid}.dcm" for uid in digests(radiographs)}
    monkeypatch.setenv("XRAY_SPARK_PSEUDONYM_KEY", KEY)
    stores = {}
    for name, images in (("folder", root / "export"), ("spool", node.spool)):
        settings = make_settings(
            tmp_path / f"lake-{name}",
            "dataset=hospital",
            "quarantine.max_fraction=0.5",
            f"privacy.identity_dir={tmp_path / f'identity-{name}'}",
        )
        summary = run_prepare(spark, Lake.at(settings.lake), settings, PrepareInputs(None, str(images), source="dicom"))
        store = spark.read.parquet(Lake.at(settings.lake).store_url("hospital"))
        rows = store.select("image_id", "patient_id", "follow_up", F.sha2("image", 256))
        stores[name] = (sorted(tuple(r) for r in rows.collect()), summary["images"]["written"])
    assert stores["spool"] == stores["folder"] and stores["spool"][1] == len(films) + len(SYNTAXES)


def test_orthanc_sends_the_archive_to_the_node_through_its_rest_api(demo, tmp_path):
    """Orthanc (its HTTP and DICOM ports in a network namespace of this test: nothing else can reach them)."""
    _, _, _, radiographs = demo
    with network_namespace() as namespace:
        node = Node(tmp_path / "node", prefix=in_namespace(namespace))
        modalities = {"xray": [AE, "127.0.0.1", node.port]}
        with orthanc(tmp_path, namespace, modalities):
            node.start()
            try:
                ids = [orthanc_rest(namespace, "POST", "/instances", p.read_bytes())["ID"] for p in radiographs]
                assert orthanc_rest(namespace, "POST", "/modalities/xray/echo", b"{}") == {}
                body = json.dumps({"Resources": ids, "Synchronous": True}).encode()
                answer = orthanc_rest(namespace, "POST", "/modalities/xray/store", body)
                assert answer["InstancesCount"] == len(radiographs) and answer["FailedInstancesCount"] == 0
            finally:
                node.stop()
        assert "ORTHANC@127.0.0.1" in node.log()
    assert digests(node.received()) == digests(radiographs)


def test_a_node_killed_mid_transfer_then_restarted_holds_every_film_once_and_none_partial(tmp_path):
    paths = _films(tmp_path / "export", 200)
    node = Node(tmp_path / "node")
    node.start()
    sender = threading.Thread(target=lambda: dcmsend(node.port, paths))
    sender.start()
    deadline = time.monotonic() + 120
    while len(node.received()) < 40:
        assert time.monotonic() < deadline, "the node received too little to kill it part-way"
        time.sleep(0.02)
    os.killpg(node.pid(), signal.SIGKILL)
    sender.join(timeout=120)
    assert 40 <= len(node.received()) < 200  # killed part-way
    node.start()  # the sender retries everything it was not sure of: here, the whole batch again
    try:
        again = dcmsend(node.port, paths)
        assert again.returncode == 0, again.stderr[-2000:]
        assert not list((node.spool / ".receiving").iterdir())
        assert "already held" in node.log()
    finally:
        node.stop()
    assert len(node.received()) == 200
    assert digests(node.received()) == digests(paths)  # each complete: it parses and its pixels are the source's


def test_a_full_disk_answers_out_of_resources_and_leaves_nothing_partial(tmp_path):
    need_root("a small tmpfs as the spool")
    paths = _films(tmp_path / "export", 40, size=256)  # 40 x 66 kB into 1 MiB: some fit, most do not
    spool = tmp_path / "node" / "spool"
    spool.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(spool)], check=True)
    try:
        with running_node(tmp_path / "node") as node:
            sent = dcmsend(node.port, paths)
            assert "not stored (the disk is full): answered Out of Resources" in node.log()
            received = node.received()
            assert 0 < len(received) < len(paths)
            refused = sent.stderr.count("Received C-STORE Response (Refused: OutOfResources)")
            assert refused == len(paths) - len(received) and f"SUCCESS  : {len(received)}" in sent.stderr
            assert not list((spool / ".receiving").iterdir())
            stored = digests(received)  # each file that is there is whole
            assert stored == {uid: d for uid, d in digests(paths).items() if uid in stored}
    finally:
        subprocess.run(["umount", str(spool)], check=False)


def test_only_allowed_senders_from_their_addresses_may_store(tmp_path):
    from pynetdicom import AE as Requestor
    from pynetdicom.sop_class import Verification

    paths = _films(tmp_path / "export", 3)
    allow = ["--allow", "PACS@127.0.0.1", "--allow", "ROUTER@127.0.0.2"]
    with running_node(tmp_path / "node", extra=allow) as node:
        stranger = dcmsend(node.port, paths, calling="STRANGER")
        assert stranger.returncode != 0 and "Rejected" in stranger.stderr + stranger.stdout
        assert not node.received()
        requestor = Requestor(ae_title="ROUTER")
        requestor.add_requested_context(Verification)
        wrong = requestor.associate("127.0.0.1", node.port, ae_title=AE, bind_address=("127.0.0.1", 0))
        assert wrong.is_rejected  # ROUTER is allowed from 127.0.0.2 only
        right = requestor.associate("127.0.0.1", node.port, ae_title=AE, bind_address=("127.0.0.2", 0))
        assert right.is_established and right.send_c_echo().Status == 0x0000
        right.release()
        assert dcmsend(node.port, paths, called="ELSEWHERE").returncode != 0  # a study routed to another node
        assert dcmsend(node.port, paths).returncode == 0 and len(node.received()) == 3
        log = node.log()
    assert "STRANGER@127.0.0.1" in log and "calling AE title not on the allow-list" in log
    assert "allowed from another address" in log


def test_ten_associations_at_once_all_succeed_and_stop_lets_the_one_in_flight_finish(tmp_path):
    batches = [_films(tmp_path / "export", 5, first=5 * k) for k in range(10)]
    with running_node(tmp_path / "node") as node:
        senders = [
            subprocess.Popen(
                [
                    need("dcmsend"),
                    "-aet",
                    f"PACS{k}",
                    "-aec",
                    AE,
                    "-nh",
                    "-dn",
                    "127.0.0.1",
                    str(node.port),
                    *map(str, batch),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for k, batch in enumerate(batches)
        ]
        assert [p.wait(timeout=120) for p in senders] == [0] * 10
        assert len(node.received()) == 50
        many = _films(tmp_path / "more", 150, first=100)
        proc = subprocess.Popen(
            [need("dcmsend"), "-aet", "PACS", "-aec", AE, "-nh", "-dn", "127.0.0.1", str(node.port), *map(str, many)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        while len(node.received()) < 60:
            assert proc.poll() is None, "the transfer ended before stop could be tried on it"
            time.sleep(0.01)
        node.stop()  # stop waits for the association in flight (dicom_node.stop_timeout_seconds)
        assert proc.wait(timeout=60) == 0
    assert len(node.received()) == 200 and "150 stored" in node.log()


def test_the_documented_dcmsend_line_sends_a_whole_export_as_it_is_written(demo, tmp_path):
    """docs/dicom-node.md's dcmsend command, run as written (only the port and the folder made this test's):
    every radiograph of the export arrives, past the README.TXT and the file cut short."""
    root, _, _, radiographs = demo
    page = (ROOT / "docs" / "dicom-node.md").read_text()
    (line,) = [m for m in re.findall(r"^dcmsend .*$", page, flags=re.M)]
    words = shlex.split(re.sub(r"\s#\s.*$", "", line))
    assert words[-3:] == ["127.0.0.1", "11112", "/data/export"] or words[-1] == "/data/export", words
    with running_node(tmp_path / "node") as node:
        argv = [need("dcmsend"), *words[1:]]
        argv = [str(node.port) if w == "11112" else str(root / "export") if w == "/data/export" else w for w in argv]
        sent = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        assert sent.returncode == 0, sent.stderr[-2000:]
        assert len(node.received()) == len(radiographs), sent.stderr[-2000:]


def test_a_night_from_the_spool_ingests_what_arrived_and_the_lake_holds_no_identity(
    spark, demo, small_model, tmp_path, monkeypatch
):
    from xray_spark.registry import register_model, set_alias

    _, films, _, radiographs = demo
    planted = sorted({str(dcmread(p, stop_before_pixels=True).get(k, "")) for p in radiographs[:5] for k in PHI} - {""})
    lake = tmp_path / "lake"
    with running_node(tmp_path / "node", extra=["--lake", lake]) as node:
        assert dcmsend(node.port, radiographs).returncode == 0
        status = json.loads(node.cli("status").stdout)
        assert status["not_ingested"] == len(radiographs) and status["listening"] == f"{AE}@127.0.0.1:{node.port}"
    monkeypatch.setenv("XRAY_SPARK_PSEUDONYM_KEY", KEY)
    args = ["--source", "dicom", "--images", node.spool, "--lake", lake, "--set", "dataset=hospital"]
    args += [item for override in [*TEST_OVERRIDES, DISPLAY] for item in ("--set", override)]  # pictures too
    args += ["--set", "score.heatmaps=none", "--set", "dicom_node.after_ingest=done"]
    args += ["--set", f"privacy.identity_dir={tmp_path / 'identity'}", "--summary-json", tmp_path / "night.json"]
    args += ["--set", f"deliver.destinations=[folder:{tmp_path / 'results'}]"]  # the night's last step
    # The two nights that start Spark run in this process, on its session (run_in_process); the third, which must
    # not start Spark at all, runs as cron runs it.
    failed = run_in_process("nightly", args)  # no model to score with: the night fails after its prepare
    assert failed.returncode != 0 and len(node.received()) == len(radiographs)  # and moves nothing
    assert json.loads(node.cli("status", "--spool", node.spool, check=False).stdout)["not_ingested"] == len(radiographs)
    stored = len(films) + len(SYNTAXES)  # the radiographs that are frontal chest films
    assert json.loads((tmp_path / "night.json").read_text())["prepare"]["images"]["written"] == stored
    register_model(spark, Lake.at(str(lake)), small_model["model_dir"], dataset="nih")
    set_alias(spark, Lake.at(str(lake)), small_model["version"], reason="the night's champion")
    night = checked(run_in_process("nightly", args))
    summary = json.loads((tmp_path / "night.json").read_text())
    # What the failed night stored is not decoded again; all of it is scored now, then moved to done/.
    assert summary["prepare"]["images"]["written"] == 0
    assert summary["prepare"]["dicom"]["already_in_store"] == stored and summary["score"]["written"] == stored
    assert summary["spool"] == {"ingested": len(radiographs), "after_ingest": "done", "priors": 0}
    assert not node.received() and len(list((node.spool / "done").iterdir())) == len(radiographs)
    # ... and delivered from done/, where the night moved them: one SR per scored film
    assert summary["deliver"]["sent"] == stored and len(list((tmp_path / "results").glob("*.dcm"))) == stored
    again = checked(run_job("nightly", args))  # nothing new: no Spark, nothing read again
    assert "nothing to ingest" in again.stderr and "SparkContext" not in again.stderr
    needles = [v.encode() for v in [*planted, "ZZSYNTAX"]]
    assert not [v for v in planted if v in night.stdout + night.stderr]
    searched = 0
    for path in lake.rglob("*"):
        found = [n for n in needles if n in str(path).encode() or (path.is_file() and n in path.read_bytes())]
        assert not found, f"{path.relative_to(lake)} holds {found[:3]}"
        searched += path.is_file()
    assert searched > 30


def test_the_spool_stores_an_instance_once_and_a_failed_write_leaves_nothing(tmp_path, monkeypatch):
    spool = open_spool(str(tmp_path / "spool"), str(tmp_path / "lake"))
    assert spool.store("1.2.3.4", b"first") == "stored" and spool.store("1.2.3.4", b"first") == "held"
    assert (tmp_path / "spool" / "incoming" / "1.2.3.4.dcm").read_bytes() == b"first"

    def full(_fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError):
        spool.store("1.2.3.5", b"x" * 1000)
    monkeypatch.undo()
    assert [p.name for p in spool_files(spool)] == ["1.2.3.4.dcm"] and not os.listdir(spool.receiving)
    with pytest.raises(ValueError, match="not a DICOM UID"):
        spool.store("../../etc/passwd", b"x")
    spool.store("1.2.3.6", b"third")
    assert [os.path.basename(p) for p in spool.pending()] == ["1.2.3.4.dcm", "1.2.3.6.dcm"]
    spool.mark_ingested(spool.pending()[:1], "keep")
    assert [os.path.basename(p) for p in spool.pending()] == ["1.2.3.6.dcm"]
    spool.mark_ingested(spool.pending(), "done")
    assert spool.pending() == [] and os.listdir(spool.done) == ["1.2.3.6.dcm"]


def test_a_film_re_sent_with_other_bytes_never_replaces_the_one_a_night_ingested(tmp_path):
    """Once ingested (and moved to done/), a file is the source of a film in the lake: a re-send under its SOP Instance
    UID with other pixels is kept beside it as a correction, for a person, and no night reads or moves it over."""
    spool = open_spool(str(tmp_path / "spool"), str(tmp_path / "lake"))
    assert spool.store("1.2.3.7", b"the film a night scored") == "stored"
    spool.mark_ingested(spool.pending(), "done")
    assert spool.store("1.2.3.7", b"other pixels, same UID") == "correction"
    assert spool.store("1.2.3.7", b"other pixels, same UID") == "held"  # the same correction again
    assert spool.store("1.2.3.7", b"the film a night scored") == "held"
    assert spool.pending() == []  # nothing for a night
    assert (Path(spool.done) / "1.2.3.7.dcm").read_bytes() == b"the film a night scored"
    (correction,) = spool.correction_files()
    assert Path(correction).read_bytes() == b"other pixels, same UID" and Path(correction).name.startswith("1.2.3.7.")
    # A re-send that reached incoming/ before its first copy was moved (after_ingest=keep, then done) is not moved over.
    (Path(spool.incoming) / "1.2.3.7.dcm").write_bytes(b"a third version")
    spool.mark_ingested([str(Path(spool.incoming) / "1.2.3.7.dcm")], "done")
    assert (Path(spool.done) / "1.2.3.7.dcm").read_bytes() == b"the film a night scored"
    assert len(spool.correction_files()) == 2 and not list(Path(spool.incoming).iterdir())
    status = subprocess.run(
        node_command("status", tmp_path / "state", "--spool", spool.root, "--lake", tmp_path / "lake"),
        env=job_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert json.loads(status.stdout)["corrections"] == 2


def spool_files(spool: Spool) -> list[Path]:
    return sorted(Path(spool.incoming).iterdir())


def test_a_spool_inside_the_lake_and_an_open_address_without_an_allow_list_are_refused(tmp_path):
    with pytest.raises(UsageError, match="inside the lake"):
        open_spool(str(tmp_path / "lake" / "spool"), str(tmp_path / "lake"))
    cases = [
        (["--spool", tmp_path / "lake" / "spool"], "is inside the lake"),
        (["--spool", tmp_path / "s", "--host", "0.0.0.0"], "refusing to listen on 0.0.0.0 without dicom_node.allow"),
        (["--spool", tmp_path / "s", "--allow", "PACS"], "must look like AE_TITLE@ADDRESS"),
        (["--spool", tmp_path / "s", "--allow", "PACS@pacs.example.org"], "is not an IP address"),
    ]
    for extra, message in cases:
        argv = node_command("start", tmp_path / "state", "--lake", tmp_path / "lake", *extra)
        result = subprocess.run(argv, env=job_env(), capture_output=True, text=True, timeout=60)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr
    status = subprocess.run(node_command("status", tmp_path / "state"), env=job_env(), capture_output=True, text=True)
    assert status.returncode == 3 and json.loads(status.stdout)["running"] is False
