"""The release benchmark's figures from its results: growth fits, ratios to the peers and limits, a plot.

    python bench/release_report.py [bench/results/release_cpu2.json] [--plot docs/release_growth.png]

Growth: per step, a line through (images, seconds in the job) over the sizes (fixed cost and
cost per image), and the marginal cost per image between neighbouring sizes; a step whose
marginal cost rises by more than ``SUPERLINEAR`` from the smaller pair to the larger one is
called superlinear. Ratios: each job's time to its Spark peer's (above 1: the job is faster),
and the whole release's prepare + score to the plain-Python limits' time for as many images.
"""

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: A rise of the marginal cost per image by more than this share is growth faster than linear.
SUPERLINEAR = 0.2
#: Steps and peers, as the results name them, and how the plot labels them.
STEPS = {
    "prepare": "prepare",
    "ingest_peer_binaryfile": "peer: binaryFile + pandas UDF",
    "score_heatmaps_none": "score --heatmaps none",
    "score_heatmaps_top:100": "score --heatmaps top:100",
    "score_peer_predict_batch_udf": "peer: predict_batch_udf",
}
PEERS = {"prepare": "ingest_peer_binaryfile", "score_heatmaps_none": "score_peer_predict_batch_udf"}


def _points(results: dict, step: str) -> list[tuple[int, float]]:
    points = [(s[step]["images"], s[step]["job_s"]) for s in results["sizes"].values() if step in s]
    return sorted(points)


def growth(results: dict) -> dict:
    """Per step: fixed seconds, ms per image, the marginal costs, and whether it grows faster than linearly."""
    out = {}
    for step in STEPS:
        points = _points(results, step)
        if len(points) < 2:
            continue
        xs, ys = zip(*points, strict=True)
        slope, intercept = np.polyfit(xs, ys, 1)
        marginal = [(y2 - y1) / (x2 - x1) * 1000 for (x1, y1), (x2, y2) in itertools.pairwise(points)]
        rise = marginal[-1] / marginal[0] - 1 if len(marginal) > 1 and marginal[0] > 0 else 0.0
        out[step] = {
            "fixed_s": round(float(intercept), 2),
            "ms_per_image": round(float(slope) * 1000, 3),
            "marginal_ms_per_image": [round(m, 3) for m in marginal],
            "marginal_rise": round(rise, 3),
            "superlinear": rise > SUPERLINEAR,
        }
    return out


def limit_rates(results: dict) -> tuple[float | None, float | None]:
    """Images per second of the two plain-Python limits, each from the fastest of its repeats (a limit is what
    the work can reach; the slower repeats were disturbed): ingest on one core times two, predict in the faster of
    its two forms (one process on two threads, or a process per core)."""
    limits = results.get("plain_python_limits", {})
    ingest, predict = limits.get("ingest"), limits.get("predict")
    ingest_rate = 2 * ingest["images"] / min(ingest["seconds"]) if ingest else None
    predict_rate = predict["images"] / min(predict["seconds"]) if predict else None
    return ingest_rate, predict_rate


def ratios(results: dict) -> dict:
    """Per size, each job against its peer (peer seconds / job seconds); the release against the limits."""
    out: dict = {"limits_images_per_s": [round(r, 1) if r else None for r in limit_rates(results)]}
    ingest_rate, predict_rate = limit_rates(results)
    for size, steps in results["sizes"].items():
        row = {
            f"{job}_vs_{peer}": round(steps[peer]["job_s"] / steps[job]["job_s"], 2)
            for job, peer in PEERS.items()
            if peer in steps
        }
        if ingest_rate and predict_rate:
            limit_s = steps["prepare"]["images"] / ingest_rate + steps["score_heatmaps_none"]["images"] / predict_rate
            ours = steps["prepare"]["job_s"] + steps["score_heatmaps_none"]["job_s"]
            row["prepare_plus_score_over_limits"] = round(ours / limit_s, 2)
        out[size] = row
    return out


def plot(results: dict, path: Path) -> None:
    """Milliseconds per image against images (log scale), one line per job and peer, the limits dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.8), dpi=110)
    for step, label in STEPS.items():
        points = _points(results, step)
        if points:
            ax.plot([x for x, _ in points], [1000 * y / x for x, y in points], marker="o", label=label)
    for (name, style), rate in zip((("ingest", "--"), ("predict", ":")), limit_rates(results), strict=True):
        if rate:
            ax.axhline(1000 / rate, linestyle=style, color="gray", linewidth=1.2, label=f"plain-Python {name} limit")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("images in the archive")
    ax.set_ylabel("ms per image, time in the job")
    ax.set_title(f"The NIH release and its slices ({results['machine'].get('cores')} cores)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _row(cells: list) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def markdown(results: dict) -> str:
    """The tables the benchmarks page quotes, straight from the results."""
    sizes = list(results["sizes"])
    films = [f"{results['sizes'][s]['films']:,}" for s in sizes]
    lines = [_row(["seconds in the job (images/s)", *[f"{s} ({f})" for s, f in zip(sizes, films, strict=True)]])]
    lines.append(_row(["---"] * (len(sizes) + 1)))
    for step, label in STEPS.items():
        cells = []
        for size in sizes:
            run = results["sizes"][size].get(step)
            cells.append(f"{run['job_s']:.0f} ({run['images_per_s_job']})" if run else "")
        lines.append(_row([label, *cells]))
    for name, label in (
        ("prepare_vs_ingest_peer_binaryfile", "ingest peer / prepare"),
        ("score_heatmaps_none_vs_score_peer_predict_batch_udf", "score peer / score"),
        ("prepare_plus_score_over_limits", "(prepare + score) / plain-Python limits"),
    ):
        lines.append(_row([label, *[results["ratios"][s].get(name, "") for s in sizes]]))
    worklist = [results["sizes"][s].get("worklist", {}).get("job_s", "") for s in sizes]
    lines.append(_row(["worklist (100 films), seconds in the job", *worklist]))
    lines += ["", _row(["growth", "fixed, s", "ms per image", "marginal ms per image", "superlinear"])]
    lines.append(_row(["---"] * 5))
    for step, fit in results["growth"].items():
        marginal = " -> ".join(str(m) for m in fit["marginal_ms_per_image"])
        lines.append(_row([STEPS[step], fit["fixed_s"], fit["ms_per_image"], marginal, fit["superlinear"]]))
    lines += ["", _row(["peak MiB: JVM / Python (all) / largest Python / driver heap", *sizes])]
    lines.append(_row(["---"] * (len(sizes) + 1)))
    for step, label in [*STEPS.items(), ("worklist", "worklist")]:
        cells = []
        for size in sizes:
            run = results["sizes"][size].get(step)
            if run:
                rss = run["peak_rss_mib"]
                heap = run.get("driver", {}).get("driver_peak_heap_mib", "")
                cells.append(f"{rss['jvm']:,} / {rss['python']:,} / {rss.get('python_largest', '')} / {heap}")
            else:
                cells.append("")
        lines.append(_row([label, *cells]))
    lines += ["", _row(["bytes of task results sent to the driver", *sizes]), _row(["---"] * (len(sizes) + 1))]
    for step, label in [*STEPS.items(), ("worklist", "worklist")]:
        runs = [results["sizes"][s].get(step) or {} for s in sizes]
        lines.append(_row([label, *[f"{r.get('driver', {}).get('task_results_bytes', 0):,}" for r in runs]]))
    redone = [step for step in STEPS if any(f"{step}_before" in results["sizes"][s] for s in sizes)]
    if redone:
        lines += ["", _row(["measured again after a change: seconds in the job, before / after", *sizes])]
        lines.append(_row(["---"] * (len(sizes) + 1)))
        for step in redone:
            cells = []
            for size in sizes:
                before, after = (results["sizes"][size].get(k) for k in (f"{step}_before", step))
                cells.append(f"{before['job_s']:.0f} / {after['job_s']:.0f}" if before and after else "")
            lines.append(_row([STEPS[step], *cells]))
    for key in ("sql_before", "sql"):
        if all(key in results["sizes"][s] for s in sizes):
            lines += ["", _row([f"{key}: seconds cold / warm", *sizes]), _row(["---"] * (len(sizes) + 1))]
            for query in results["sizes"][sizes[0]][key]:
                times = [results["sizes"][s][key][query] for s in sizes]
                lines.append(_row([query, *[f"{t['cold_s']} / {t['warm_s']}" for t in times]]))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="?", default=str(ROOT / "bench" / "results" / "release_cpu2.json"))
    parser.add_argument("--plot", help="write the plot here (PNG)")
    parser.add_argument("--markdown", action="store_true", help="print the tables for the docs instead of JSON")
    args = parser.parse_args()
    results = json.loads(Path(args.results).read_text())
    results["growth"], results["ratios"] = growth(results), ratios(results)
    Path(args.results).write_text(json.dumps(results, indent=2) + "\n")
    if args.plot:
        plot(results, Path(args.plot))
    if args.markdown:
        print(markdown(results))
        return
    json.dump({"growth": results["growth"], "ratios": results["ratios"]}, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
