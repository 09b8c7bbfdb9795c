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


def ratios(results: dict) -> dict:
    """Per size, each job against its peer (peer seconds / job seconds); the release against the limits."""
    out: dict = {}
    limits = results.get("plain_python_limits", {})
    ingest_rate = limits.get("ingest", {}).get("two_cores_limit_images_per_s")
    predict_rate = limits.get("predict", {}).get("images_per_s")
    for size, steps in results["sizes"].items():
        row = {f"{job}_vs_{peer}": round(steps[peer]["job_s"] / steps[job]["job_s"], 2) for job, peer in PEERS.items()}
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
    limits = results.get("plain_python_limits", {})
    for name, key in (("ingest", "two_cores_limit_images_per_s"), ("predict", "images_per_s")):
        rate = limits.get(name, {}).get(key)
        if rate:
            ax.axhline(1000 / rate, linestyle="--", color="gray", linewidth=1)
            ax.annotate(f"plain-Python {name} limit", (ax.get_xlim()[0], 1000 / rate), fontsize=8, color="gray")
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="?", default=str(ROOT / "bench" / "results" / "release_cpu2.json"))
    parser.add_argument("--plot", help="write the plot here (PNG)")
    args = parser.parse_args()
    results = json.loads(Path(args.results).read_text())
    results["growth"], results["ratios"] = growth(results), ratios(results)
    Path(args.results).write_text(json.dumps(results, indent=2) + "\n")
    if args.plot:
        plot(results, Path(args.plot))
    json.dump({"growth": results["growth"], "ratios": results["ratios"]}, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
