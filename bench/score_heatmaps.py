"""What heatmaps add to a scoring run: jobs/score.py with --heatmaps none against top:100, alternately.

    python bench/score_heatmaps.py --lake LAKE [--dataset NAME] [--repeats 2]
                                   [--out bench/results/score_heatmaps_cpu2.json]

Scores the whole store of a lake that has a model (after ``make demo``: ``--lake lake``)
``--repeats`` times each way, and reports the seconds in the job, the heatmaps written and
their share of the run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import log, machine, run_job  # noqa: E402  (bench/pipeline.py, beside this file)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lake", required=True)
    parser.add_argument("--dataset", default="nih")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "score_heatmaps_cpu2.json"))
    args = parser.parse_args()
    work = ROOT / "bench" / ".cache"
    work.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict]] = {"none": [], "top:100": []}
    for i in range(args.repeats):
        for choice in runs:
            common = ["--conf", str(ROOT / "conf" / "local.yaml"), "--lake", args.lake, "--dataset", args.dataset]
            run = run_job("score", [*common, "--heatmaps", choice], work / "score.json")
            summary = run["summary"]
            runs[choice].append(
                {
                    "job_s": run["job_s"],
                    "images": summary["written"],
                    "heatmaps": summary["heatmaps"]["written"],
                    "heatmap_s": summary["heatmaps"].get("seconds", 0.0),
                    "peak_rss_mib": run["peak_rss_mib"],
                }
            )
            log(f"  #{i + 1} {choice}: {run['job_s']} s, {summary['heatmaps']['written']} heatmaps")
    median = {c: statistics.median(r["job_s"] for r in rs) for c, rs in runs.items()}
    result = {
        "benchmark": "jobs/score.py on a whole store, --heatmaps none against top:100",
        "command": f"python bench/score_heatmaps.py --lake LAKE --dataset {args.dataset} --repeats {args.repeats}",
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "runs": runs,
        "median_job_s": median,
        "extra_s_for_top_100": round(median["top:100"] - median["none"], 1),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
