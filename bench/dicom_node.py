"""The DICOM node against dcmtk's storescp, and a night from its spool against a night from a folder.

    python bench/dicom_node.py [--images 300] [--side 1024] [--small 500] [--repeats 3]
                               [--only receive|night] [--out bench/results/dicom_node_cpu2.json]

1. Receiving: dcmtk's ``dcmsend`` (each file's own transfer syntax, never decompressed) sends
   the same films to the node (``python -m xray_spark.node``: every instance synced before
   Success) and to dcmtk's own ``storescp +xa`` (every transfer syntax accepted; it writes
   without syncing), as is and tuned as the node is (:data:`RECEIVERS`), in turn,
   ``--repeats`` times: instances and MB per second. Two sets:
   the DICOM demo export at ``--side`` px (the demo's mix of syntaxes, mostly JPEG Lossless
   and JPEG 2000), and ``--small`` films of 256 px (where the cost per instance shows).
2. A night: ``jobs/nightly.py --source dicom`` on a copy of a lake with a champion, from the
   export as a folder (``--incoming``) and from the node's spool holding the same films
   (``--images SPOOL``), alternately: wall time and time in the job.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dicom_ingest import KEY, make_archives  # noqa: E402  (beside this file)
from pipeline import SIZE, log, machine, run_job  # noqa: E402

AE = "XRAY_SPARK"


def free_port() -> int:
    from xray_spark.session import free_port as free

    return free()


def dcmsend(port: int, files: list[Path]) -> float:
    """Seconds ``dcmsend`` takes to send ``files`` in one association; fails unless all succeed."""
    started = time.perf_counter()
    result = subprocess.run(
        ["dcmsend", "-v", "-aet", "PACS", "-aec", AE, "-nh", "-dn", "127.0.0.1", str(port), *map(str, files)],
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    assert f"with status SUCCESS  : {len(files)}" in result.stderr, result.stderr[-2000:]
    return seconds


def wait_listening(port: int) -> None:
    from xray_spark.net import listening

    deadline = time.monotonic() + 30
    while not listening(port):
        assert time.monotonic() < deadline, "the receiver did not listen"
        time.sleep(0.05)


def to_node(files: list[Path], work: Path) -> float:
    spool, state = work / "spool", work / "node-state"
    shutil.rmtree(spool, ignore_errors=True)
    port = free_port()
    node = [sys.executable, "-m", "xray_spark.node"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = ["--state-dir", str(state), "--lake", str(work / "lake"), "--spool", str(spool), "--port", str(port)]
    subprocess.run([*node, "start", *args], env=env, check=True, capture_output=True)
    try:
        return dcmsend(port, files)
    finally:
        subprocess.run([*node, "stop", "--state-dir", str(state)], env=env, check=True, capture_output=True)


def to_node_unsynced(files: list[Path], work: Path) -> float:
    """The same node in this process with ``os.fsync`` a no-op: what durability costs (a measurement only)."""
    import threading
    from unittest import mock

    from xray_spark.config import DicomNodeSettings, ImageSettings
    from xray_spark.node.scp import serve
    from xray_spark.spool import open_spool

    shutil.rmtree(work / "spool-unsynced", ignore_errors=True)
    spool = open_spool(str(work / "spool-unsynced"), None)
    settings = DicomNodeSettings(port=free_port())
    stopping, ready = threading.Event(), threading.Event()
    with mock.patch("os.fsync", lambda _fd: None):
        thread = threading.Thread(
            target=serve,
            args=(settings, spool, stopping, ready.set),
            kwargs={"max_instance_bytes": ImageSettings().max_file_bytes},
        )
        thread.start()
        try:
            assert ready.wait(30)
            return dcmsend(settings.port, files)
        finally:
            stopping.set()
            thread.join()


def storescp(*options: str, nodelay: bool = True):
    """dcmtk's storescp with ``options`` (``+xa``: every transfer syntax accepted) as a receiver.

    ``nodelay``: ``TCP_NODELAY=1`` in its environment, dcmtk's switch that turns Nagle's algorithm
    off. Without it Debian's build answers each C-STORE in two small writes, the second of which
    waits for the sender's delayed ACK (about 40 ms an instance on loopback).
    """

    def send(files: list[Path], work: Path) -> float:
        out = work / "storescp"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        port = free_port()
        argv = ["storescp", *options, "-aet", AE, "-od", str(out), str(port)]
        env = {**os.environ, "TCP_NODELAY": "1"} if nodelay else None
        proc = subprocess.Popen(argv, stderr=subprocess.DEVNULL, env=env)
        try:
            wait_listening(port)
            seconds = dcmsend(port, files)
            assert len(list(out.iterdir())) == len(files)
            return seconds
        finally:
            proc.terminate()
            proc.wait(timeout=30)

    return send


#: The receivers compared: the node; the node without its syncs (what durability costs); storescp
#: with +xa and Nagle's algorithm off (the peer the goal names); the same with its defaults (Nagle
#: on); storescp writing the received bytes as they are (+B) with its largest PDU (128 KiB; the
#: node's is 256 KiB). storescp never syncs what it writes.
RECEIVERS = {
    "node": to_node,
    "node_unsynced": to_node_unsynced,
    "storescp": storescp("+xa"),
    "storescp_nagle": storescp("+xa", nodelay=False),
    "storescp_bit_preserving": storescp("+xa", "+B", "-pdu", "131072"),
}


def receive(files: list[Path], work: Path, repeats: int) -> dict:
    """Instances and MB per second into each receiver, the best of ``repeats`` alternating runs."""
    mb = sum(p.stat().st_size for p in files) / 1e6
    seconds: dict[str, list[float]] = {name: [] for name in RECEIVERS}
    for i in range(repeats):
        for name, send in RECEIVERS.items():
            seconds[name].append(round(send(files, work), 3))
            log(f"  {name} #{i + 1}: {len(files)} instances in {seconds[name][-1]} s")
    out = {"instances": len(files), "mb": round(mb, 1)}
    for name, times in seconds.items():
        best = min(times)
        out[name] = {"seconds": times, "instances_per_s": round(len(files) / best, 1), "mb_per_s": round(mb / best, 1)}
    for name in RECEIVERS:
        if name not in ("node", "node_unsynced"):
            out[f"node_vs_{name}"] = round(out["node"]["instances_per_s"] / out[name]["instances_per_s"], 2)
    return out


def small_films(folder: Path, n: int) -> list[Path]:
    from xray_spark.dev.dicom_films import encode, film

    folder.mkdir(parents=True, exist_ok=True)
    paths = sorted(folder.iterdir())
    if len(paths) == n:
        return paths
    import numpy as np

    rng = np.random.default_rng(5)
    for i in range(n):
        ds = film(rng.integers(0, 255, (256, 256), dtype=np.uint8), bits_stored=8, PatientID=f"P{i:05d}")
        (folder / f"IM{i:05d}").write_bytes(encode(ds, "explicit-le"))
    return sorted(folder.iterdir())


def champion_lake(png: Path, work: Path) -> Path:
    """A lake with the PNG archive prepared and a one-epoch model promoted: what a night scores with."""
    lake = work / "base-lake"
    if (lake / "reports" / "promoted").exists():
        return lake
    shutil.rmtree(lake, ignore_errors=True)
    conf = ["--conf", str(ROOT / "conf" / "local.yaml"), "--lake", str(lake), "--set", f"image.size={SIZE}"]
    meta = ["--metadata", str(png / "Data_Entry_2017.csv"), "--images", str(png / "images")]
    run_job("prepare", [*conf, *meta], work / "prepare.json")
    trained = run_job("train", [*conf, "--epochs", "1", "--set", "train.eval_max_rows=200"], work / "train.json")
    version = trained["summary"]["version"]
    run_job("promote", [*conf, "--model-version", version, "--reason", "the benchmark's model"], work / "promote.json")
    (lake / "reports" / "promoted").write_text(version)
    return lake


def nights(export: Path, base: Path, work: Path, repeats: int) -> dict:
    """A night from the folder and from the spool (the node received the same films first)."""
    spool = work / "night-spool"
    shutil.rmtree(spool, ignore_errors=True)
    files = sorted(p for p in export.glob("PT*/ST*/SE*/IM*"))
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    node = [sys.executable, "-m", "xray_spark.node"]
    state = ["--state-dir", str(work / "night-node")]
    subprocess.run([*node, "start", *state, "--lake", str(base), "--spool", str(spool), "--port", str(port)], env=env)
    try:
        dcmsend(port, files)
    finally:
        subprocess.run([*node, "stop", *state], env=env, check=True)
    runs: dict[str, list[dict]] = {"folder": [], "spool": []}
    for i in range(repeats):
        for way in list(runs) if i % 2 == 0 else list(runs)[::-1]:  # each goes first in turn
            lake = work / f"lake-night-{way}"  # never the spool's own folder
            shutil.rmtree(lake, ignore_errors=True)
            (spool / "ingested.txt").unlink(missing_ok=True)  # each spool night finds every film new
            shutil.copytree(base, lake, ignore=shutil.ignore_patterns("locks"))
            source = ["--incoming", str(export)] if way == "folder" else ["--images", str(spool)]
            args = ["--conf", str(ROOT / "conf" / "local.yaml"), "--lake", str(lake), "--source", "dicom", *source]
            args += ["--set", f"image.size={SIZE}", "--set", "dataset=hospital", "--set", "score.heatmaps=none"]
            args += ["--set", f"privacy.identity_dir={work / 'identity'}"]
            run = run_job("nightly", args, work / "night.json")
            written = run["summary"]["prepare"]["images"]["written"]
            runs[way].append({"films": written, "job_s": run["job_s"], "wall_s": run["wall_s"]})
            log(f"  night from the {way} #{i + 1}: {written} films, {run['job_s']} s in the job, {run['wall_s']} s")
    out: dict = {"runs": runs}
    for way, done in runs.items():
        out[f"{way}_median_wall_s"] = statistics.median(r["wall_s"] for r in done)
        out[f"{way}_median_job_s"] = statistics.median(r["job_s"] for r in done)
    out["spool_vs_folder_wall"] = round(out["spool_median_wall_s"] / out["folder_median_wall_s"], 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--side", type=int, default=1024)
    parser.add_argument("--small", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "dicom_node_cpu2.json"))
    parser.add_argument("--only", choices=("receive", "night"), help="rerun one part, keep the other's results")
    args = parser.parse_args()
    for program in ("dcmsend", "storescp"):
        if shutil.which(program) is None:
            sys.exit(f"bench/dicom_node.py: {program} is missing: apt-get install dcmtk")
    os.environ["XRAY_SPARK_PSEUDONYM_KEY"] = KEY
    cache = ROOT / "bench" / ".cache"
    work = cache / "dicom-node-work"
    work.mkdir(parents=True, exist_ok=True)
    png, dicom = make_archives(cache, args.images, args.side)
    export = sorted((dicom / "export").glob("PT*/ST*/SE*/IM*"))
    out = Path(args.out)
    results = json.loads(out.read_text())["results"] if args.only and out.exists() else {}
    if args.only in (None, "receive"):
        results["export"] = receive(export, work, args.repeats)
        small = small_films(cache / f"small-films-{args.small}", args.small)
        results["small"] = receive(small, work, args.repeats)
    if args.only in (None, "night"):
        base = champion_lake(png, work)
        results["night"] = nights(dicom / "export", base, work, max(1, args.repeats - 1))
    result = {
        "benchmark": "the DICOM node vs dcmtk's storescp (dcmsend, loopback), and a night from its spool vs a folder",
        "command": f"python bench/dicom_node.py --images {args.images} --side {args.side} --small {args.small} "
        f"--repeats {args.repeats}",
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "export": f"{args.images} demo films of {args.side} px (the demo's mix of transfer syntaxes)",
        "small": f"{args.small} films of 256 px, Explicit VR Little Endian",
        "results": results,
    }
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
