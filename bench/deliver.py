"""Delivery to the PACS: result objects built and sent per second, a night with and without it, a backfill.

    python bench/deliver.py [--night 500] [--backfill 10000] [--repeats 2] [--out bench/results/deliver_cpu2.json]

Orthanc (Debian's) is the PACS, on 127.0.0.1, taking C-STORE only from the product's AE
title at 127.0.0.1 (the demo's configuration, ``xray_spark.dev.pacs_demo``).

1. Building: one film's SR (and SC) built in this process, repeated: objects per second
   on one core, the cost highdicom sets.
2. A night: ``jobs/nightly.py --source dicom`` on ``--night`` films of 1024 px (the bench's
   DICOM export, copied with new UIDs to reach the count), on copies of a lake with a
   champion, without delivery and with ``deliver.destinations`` = Orthanc (SR only, the
   default), in turn: wall time, and the delivery's own time and films per second.
3. A backfill: ``--backfill`` films of 256 px prepared and scored once, then
   ``jobs/deliver.py`` to a folder (``--backfill-to folder``, the default: what building on
   the executors sustains, Orthanc's own storing left out) or to Orthanc: films per second,
   the time the driver spent sending, and the peak memory of the job's JVM and Python processes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dicom_ingest import KEY, make_archives  # noqa: E402  (beside this file)
from dicom_node import champion_lake, free_port, small_films  # noqa: E402
from pipeline import SIZE, log, machine, run_job  # noqa: E402

CONF = str(ROOT / "conf" / "local.yaml")


def copies(sources: list[Path], folder: Path, n: int) -> Path:
    """``n`` films in ``folder``: the sources in turn, each copy with new UIDs and a new patient (once)."""
    from pydicom import dcmread
    from pydicom.uid import generate_uid

    if folder.is_dir() and len(list(folder.iterdir())) == n:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for i in range(n):
        ds = dcmread(sources[i % len(sources)])
        tag = f"{folder.name}-{i}"
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[tag, "sop"])
        ds.StudyInstanceUID = generate_uid(entropy_srcs=[tag, "study"])
        ds.SeriesInstanceUID = generate_uid(entropy_srcs=[tag, "series"])
        ds.PatientID, ds.AccessionNumber = f"BENCH{i // 3:06d}", f"ACC{i:07d}"
        ds.save_as(folder / f"IM{i:06d}.dcm", enforce_file_format=True)
    return folder


def build_rates(film: Path, repeats: int = 30) -> dict:
    """SRs and SCs built per second in one process, on one film (highdicom's own cost)."""
    import cv2
    import numpy as np
    from pydicom import dcmread

    from xray_spark.deliver.objects import FilmResult, ModelFacts, Region, build_sc, build_sr
    from xray_spark.imaging.decode import display_image
    from xray_spark.labels import FINDINGS

    source = dcmread(film)
    heat = np.zeros((64, 64), np.uint8)
    heat[20:40, 10:30] = 255
    png = cv2.imencode(".png", heat)[1].tobytes()
    model = ModelFacts("bench", "small_cnn", tuple(FINDINGS), dict.fromkeys(FINDINGS, 0.3), "prevalence", "0")
    result = FilmResult(
        str(source.SOPInstanceUID),
        dict.fromkeys(FINDINGS, 0.4),
        frozenset({"Effusion"}),
        (Region("Effusion", 0.4, (100.0, 200.0, 300.0, 300.0), png),),
        "Effusion",
    )
    build_sr(source, result, model, "")  # imports and first-call costs out of the timing
    out = {}
    for kind in ("sr", "sc"):
        started = time.perf_counter()
        for _ in range(repeats):
            if kind == "sr":
                build_sr(source, result, model, "")
            else:
                build_sc(source, display_image(film.read_bytes()), result, model, "", 1024)
        out[f"{kind}_per_s_one_core"] = round(repeats / (time.perf_counter() - started), 1)
    return out


class Orthanc:
    """Orthanc on 127.0.0.1 (fresh storage each time), as the PACS the results go to."""

    def __init__(self, work: Path) -> None:
        self.folder = work / "orthanc"
        self.http, self.dicom = free_port(), free_port()

    def __enter__(self) -> Orthanc:
        from xray_spark.dev.pacs_demo import start_orthanc

        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        self.proc = start_orthanc(self.folder, self.http, self.dicom, free_port())
        assert self.proc is not None, (self.folder / "orthanc.log").read_text()[-2000:]
        return self

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait(60)

    @property
    def destination(self) -> str:
        return f"ORTHANC@127.0.0.1:{self.dicom}"


def nights(export: Path, base: Path, work: Path, repeats: int) -> dict:
    """The same night without and with delivery to Orthanc, in turn."""
    runs: dict[str, list[dict]] = {"without": [], "with": []}
    for i in range(repeats):
        for way in list(runs) if i % 2 == 0 else list(runs)[::-1]:
            lake = work / f"lake-night-{way}"
            shutil.rmtree(lake, ignore_errors=True)
            shutil.copytree(base, lake, ignore=shutil.ignore_patterns("locks"))
            args = ["--conf", CONF, "--lake", str(lake), "--source", "dicom", "--incoming", str(export)]
            args += ["--set", f"image.size={SIZE}", "--set", "dataset=hospital", "--set", "score.heatmaps=none"]
            args += ["--set", f"privacy.identity_dir={work / f'identity-{way}'}"]
            shutil.rmtree(work / f"identity-{way}", ignore_errors=True)
            with Orthanc(work) as pacs:
                if way == "with":
                    args += ["--set", f"deliver.destinations=[{pacs.destination}]"]
                run = run_job("nightly", args, work / "night.json")
            summary = run["summary"]
            entry = {"films": summary["score"]["written"], "job_s": run["job_s"], "wall_s": run["wall_s"]}
            if way == "with":
                done = summary["deliver"]
                assert done["sent"] == entry["films"] and not done["failed"], done
                rate = round(done["sent"] / done["seconds"], 1)
                entry |= {
                    "deliver_s": done["seconds"],
                    "in_c_store_s": done["send_seconds"],
                    "deliver_films_per_s": rate,
                }
            runs[way].append(entry)
            log(f"  night {way} delivery #{i + 1}: {entry}")
    out: dict = {"runs": runs}
    for way, done in runs.items():
        out[f"{way}_median_wall_s"] = statistics.median(r["wall_s"] for r in done)
    out["with_vs_without_wall"] = round(out["with_median_wall_s"] / out["without_median_wall_s"], 2)
    out["deliver_median_s"] = statistics.median(r["deliver_s"] for r in runs["with"])
    return out


def backfill(films: Path, base: Path, work: Path, *, to: str = "folder", setup_only: bool = False) -> dict:
    """``films`` prepared and scored once; then delivered to a folder (building-bound) or to Orthanc."""
    lake = work / "lake-backfill"
    common = ["--conf", CONF, "--lake", str(lake), "--set", f"image.size={SIZE}", "--set", "dataset=backfill"]
    common += ["--set", f"privacy.identity_dir={work / 'identity-backfill'}"]
    if not (lake / "reports" / "scored").exists():
        shutil.rmtree(lake, ignore_errors=True)
        shutil.rmtree(work / "identity-backfill", ignore_errors=True)
        shutil.copytree(base, lake, ignore=shutil.ignore_patterns("locks"))
        run_job("prepare", [*common, "--source", "dicom", "--images", str(films)], work / "bf-prepare.json")
        run_job("score", [*common, "--new-only", "--heatmaps", "none"], work / "bf-score.json")
        (lake / "reports" / "scored").write_text("yes")
    if setup_only:
        return {}
    shutil.rmtree(lake / "tables" / "deliveries", ignore_errors=True)  # every film to deliver again
    shutil.rmtree(work / "bf-results", ignore_errors=True)
    if to == "folder":
        run = run_job("deliver", [*common, "--to-folder", str(work / "bf-results")], work / "bf-deliver.json")
    else:
        with Orthanc(work) as pacs:
            run = run_job("deliver", [*common, "--to", pacs.destination], work / "bf-deliver.json")
    summary = run["summary"]
    assert summary["sent"] == summary["to_deliver"] and not summary["failed"], summary
    out = {
        "films": summary["sent"],
        "deliver_s": summary["seconds"],
        "sending_s": summary["send_seconds"],
        "films_per_s": round(summary["sent"] / summary["seconds"], 1),
        "wall_s": run["wall_s"],
        "peak_rss_mib": run["peak_rss_mib"],
    }
    out["to"] = to
    log(f"  backfill to {to}: {out}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--night", type=int, default=500)
    parser.add_argument("--backfill", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "deliver_cpu2.json"))
    parser.add_argument("--only", choices=("night", "backfill"), help="rerun one part, keep the other's results")
    parser.add_argument("--setup-only", action="store_true", help="with --only backfill: prepare and score, no more")
    parser.add_argument(
        "--backfill-to", choices=("folder", "orthanc"), default="folder", help="where the backfill goes"
    )
    args = parser.parse_args()
    if shutil.which("Orthanc") is None:
        sys.exit("bench/deliver.py: Orthanc is missing: apt-get install orthanc")
    os.environ["XRAY_SPARK_PSEUDONYM_KEY"] = KEY
    cache = ROOT / "bench" / ".cache"
    work = cache / "deliver-work"
    work.mkdir(parents=True, exist_ok=True)
    png, dicom = make_archives(cache, 300, 1024)
    export = sorted((dicom / "export").glob("PT*/ST*/SE*/IM*"))
    night = copies(export, cache / f"deliver-night-{args.night}", args.night)
    base = champion_lake(png, cache / "dicom-node-work")
    out = Path(args.out)
    results = json.loads(out.read_text())["results"] if args.only and out.exists() else {}
    if args.only in (None, "night"):
        results["build"] = build_rates(sorted(night.iterdir())[0])
        log(f"building: {results['build']}")
        results["night"] = nights(night, base, work, args.repeats)
    if args.only in (None, "backfill"):
        small = small_films(cache / "small-films-500", 500)
        small = copies(small, cache / f"deliver-backfill-{args.backfill}", args.backfill)
        results["backfill"] = backfill(small, base, work, to=args.backfill_to, setup_only=args.setup_only)
        if args.setup_only:
            return
    result = {
        "benchmark": "results to the PACS: objects built and sent per second, a night with and without delivery, "
        "a backfill",
        "command": f"python bench/deliver.py --night {args.night} --backfill {args.backfill} --repeats {args.repeats}"
        + (f" (--only {args.only} last; the other part from the run before)" if args.only else ""),
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "night": f"{args.night} films of 1024 px (the demo's mix of transfer syntaxes), SR only",
        "backfill": f"{args.backfill} films of 256 px, Explicit VR Little Endian, SR only, to {args.backfill_to}",
        "results": results,
    }
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
