"""The nightly run of the benchmark: tonight's new studies in one Spark session vs three jobs.

A night is the 1x archive's images under new patients (hard links, like the larger archives),
added to a copy of the 1x lake, whose studies the benchmark's model has already scored:
``jobs/nightly.py --incoming`` (prepare --incremental, score --new-only, worklist in one
session) against the same three steps as three jobs, each on a fresh copy of that lake.
"""

from __future__ import annotations

import os
import shutil
import statistics
from collections.abc import Callable
from pathlib import Path

#: Tonight's patients: the 1x archive's, moved above every size's (16x adds up to 15,000,000).
NIGHT_PATIENT_OFFSET = 50_000_000


def night_archive(unique: Path, folder: Path) -> Path:
    """The 1x archive's rows under new patients and image ids, images hard-linked; made once."""
    if (folder / "Data_Entry_2017.csv").exists():
        return folder
    (folder / "images").mkdir(parents=True, exist_ok=True)
    header, *rows = (unique / "Data_Entry_2017.csv").read_text(encoding="utf-8").splitlines()
    lines = [header]
    for row in rows:
        fields = row.split(",")
        patient = int(fields[3]) + NIGHT_PATIENT_OFFSET
        image_id = f"{patient:08d}_{int(fields[2]):03d}.png"
        os.link(unique / "images" / fields[0], folder / "images" / image_id)
        lines.append(",".join([image_id, fields[1], fields[2], str(patient), *fields[4:]]))
    (folder / "Data_Entry_2017.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def nightly_runs(run_job: Callable, conf: str, base_lake: Path, night: Path, work: Path, repeats: int) -> dict:
    """Wall time, time in the jobs and peak memory of a night, both ways, ``repeats`` times each."""
    runs: dict[str, list[dict]] = {"one_session": [], "three_jobs": []}
    common = ["--conf", conf, "--set", "image.size=224"]
    csv, images = str(night / "Data_Entry_2017.csv"), str(night / "images")
    for i in range(repeats):
        for way in runs:
            lake = work / f"night-{way}-{i}"
            shutil.rmtree(lake, ignore_errors=True)
            shutil.copytree(base_lake, lake, ignore=shutil.ignore_patterns("locks"))
            args = [*common, "--lake", str(lake)]
            if way == "one_session":
                steps = [("nightly", [*args, "--incoming", str(night)])]
            else:
                prepare = [*args, "--incremental", "--metadata", csv, "--images", images]
                steps = [("prepare", prepare), ("score", [*args, "--new-only"]), ("worklist", args)]
            done = [run_job(job, step_args, work / f"{job}.json") for job, step_args in steps]
            # Each step's own summary, by job: the nightly job's summary holds all three.
            by_job = {job: d["summary"] for (job, _), d in zip(steps, done, strict=True)}
            by_job = by_job.get("nightly", by_job)
            runs[way].append(
                {
                    "wall_s": round(sum(d["wall_s"] for d in done), 2),
                    "job_s": round(sum(d["job_s"] for d in done), 2),
                    "steps_s": {job: by_job[job]["seconds"] for job in ("prepare", "score", "worklist")},
                    "added": by_job["prepare"]["images"]["written"],
                    "scored": by_job["score"]["written"],
                    "peak_rss_mib": max((d["peak_rss_mib"] for d in done), key=lambda p: p["total"]),
                }
            )
            shutil.rmtree(lake, ignore_errors=True)
    median = {way: statistics.median(r["wall_s"] for r in rs) for way, rs in runs.items()}
    return {
        "new_studies": runs["one_session"][0]["added"],
        "heatmaps": "conf default (top:100)",
        "runs": runs,
        "median_wall_s": median,
        "saved_wall_s": round(median["three_jobs"] - median["one_session"], 1),
    }
