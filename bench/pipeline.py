"""Throughput of each job against the fastest plain-Python way to do the same work, and how cost grows.

    python bench/pipeline.py [--scale 500] [--repeats 3] [--out bench/results/pipeline_cpu2.json]
    (make bench)

Inputs: synthetic NIH-size images (1024 x 1024 8-bit PNG), made once and cached under
``bench/.cache``; the larger archives (2x to 16x) repeat the 1x images under new ids and patients
(hard links), so every size decodes the same kind of file. The jobs run as a user runs
them (``python jobs/<job>.py``, default configuration, local[2], a 224 px store), one
process per run; each baseline runs in this process on the same inputs.

1. ingest: ``prepare`` vs a loop of the library's own read-decode-resize-encode on one core, x2;
2. training input: Petastorm ``make_batch_reader`` -> ``tf.data`` decode and batches vs
   decoding the same PNG bytes in a loop (one thread, and two), and how fast small_cnn and
   densenet121 consume batches here;
3. scoring: ``score`` vs ``model.predict`` over the same decoded arrays, same thread count;
4. growth: ingest and scoring time per image at 1x, 2x, 4x, 8x and 16x (a linear fit: fixed + per image);
5. memory: peak resident memory of the JVM and of the Python processes of each job;
6. a night: 500 new studies added, scored and listed by ``jobs/nightly.py`` in one session vs
   the three jobs one after another (``bench/nightly_runs.py``).

Every timing is repeated ``--repeats`` times; the median is reported with all runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from nightly_runs import night_archive, nightly_runs  # noqa: E402  (bench/, beside this file)

from xray_spark.dev.cluster import process_tree  # noqa: E402  (after the path is set)

SIZE = 224  # the store's image side: DenseNet-121's input
SIZES = {"1x": 1, "2x": 2, "4x": 4, "8x": 8, "16x": 16}
PARTS = ("ingest", "input", "scoring", "nightly")
#: Sizes above this factor run one repeat fewer (the benchmark stays under about 25 minutes).
FULL_REPEATS_UP_TO = 4


def repeats_for(size: str, repeats: int) -> int:
    return repeats if SIZES[size] <= FULL_REPEATS_UP_TO else max(1, repeats - 1)


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


# -- inputs ------------------------------------------------------------------------------------
def make_inputs(cache: Path, scale: int) -> dict[str, Path]:
    """``{size: archive folder}`` with Data_Entry_2017.csv and images/ for each of :data:`SIZES`."""
    from xray_spark.dev.synthetic import write_archive

    base = cache / f"nih1024-{scale}"
    unique = base / "unique"
    if not (unique / "Data_Entry_2017.csv").exists():
        log(f"writing {scale} synthetic 1024 px images to {unique} (once)")
        shutil.rmtree(unique, ignore_errors=True)
        write_archive(unique, n_images=scale, size=1024, seed=2017)
    with open(unique / "Data_Entry_2017.csv", encoding="utf-8") as fh:
        header, *rows = fh.read().splitlines()
    archives = {}
    for name, factor in SIZES.items():
        folder = base / name
        archives[name] = folder
        if (folder / "Data_Entry_2017.csv").exists():
            continue
        (folder / "images").mkdir(parents=True, exist_ok=True)
        lines = [header]
        for copy in range(factor):
            for row in rows:
                fields = row.split(",")
                patient = int(fields[3]) + copy * 1_000_000
                image_id = f"{patient:08d}_{int(fields[2]):03d}.png"
                os.link(unique / "images" / fields[0], folder / "images" / image_id)
                lines.append(",".join([image_id, fields[1], fields[2], str(patient), *fields[4:]]))
        (folder / "Data_Entry_2017.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return archives


# -- running a job and watching its memory --------------------------------------------------------
def _rss_and_kind(pid: int) -> tuple[int, str]:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return 0, ""
    rss = next((int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return rss, "jvm" if comm == "java" else "python"


def run_watched(cmd: list[str], env: dict) -> dict:
    """Run ``cmd`` to the end, its stderr kept; its wall time and the peak RSS of its JVM and Python processes
    (``python`` all of them together, ``python_largest`` the largest one)."""
    started = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peaks = {"jvm": 0, "python": 0, "python_largest": 0, "total": 0}
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            sums = {"jvm": 0, "python": 0}
            for pid in process_tree(proc.pid):
                rss, kind = _rss_and_kind(pid)
                if kind:
                    sums[kind] += rss
                if kind == "python":
                    peaks["python_largest"] = max(peaks["python_largest"], rss)
            for kind, value in sums.items():
                peaks[kind] = max(peaks[kind], value)
            peaks["total"] = max(peaks["total"], sum(sums.values()))
            done.wait(0.25)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    _, stderr = proc.communicate()
    done.set()
    watcher.join()
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[1]} failed (exit {proc.returncode}):\n{stderr[-3000:]}")
    return {"wall_s": round(wall, 2), "peak_rss_mib": {k: round(v / 2**20) for k, v in peaks.items()}}


def run_job(job: str, args: list[str], summary: Path) -> dict:
    """Run a job to the end; its wall time, its own summary, and the peak RSS of its JVM and Python processes."""
    cmd = [sys.executable, str(ROOT / "jobs" / f"{job}.py"), *args, "--summary-json", str(summary)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XRAY_SPARK_LOG": "WARNING"}
    watched = run_watched(cmd, env)
    result = json.loads(summary.read_text())
    # register_model reports no time
    return {"wall_s": watched["wall_s"], "job_s": result.get("seconds")} | watched | {"summary": result}


def median_of(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


# -- 1 and 4: ingest ---------------------------------------------------------------------------------
def ingest_baseline(archive: Path, repeats: int) -> dict:
    """The library's own per-image work (read, decode, resize, PNG-encode), one core, no Spark."""
    from xray_spark.imaging import decode as img
    from xray_spark.lake.schema import XraySchema

    field = XraySchema.image
    files = sorted((archive / "images").iterdir())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for path in files:
            pixels, _ = img.load_training_image(path.read_bytes(), SIZE)
            field.codec.encode(field, pixels)
        times.append(time.perf_counter() - start)
    rate = len(files) / statistics.median(times)
    return {
        "images": len(files),
        "seconds": [round(t, 2) for t in times],
        "one_core_images_per_s": round(rate, 1),
        "two_cores_limit_images_per_s": round(2 * rate, 1),
    }


def prepare_runs(archive: Path, work: Path, repeats: int) -> list[dict]:
    runs = []
    for i in range(repeats):
        lake = work / f"lake-{archive.name}-{i}"
        shutil.rmtree(lake, ignore_errors=True)
        args = ["--conf", str(ROOT / "conf" / "local.yaml"), "--lake", str(lake), "--set", f"image.size={SIZE}"]
        args += ["--metadata", str(archive / "Data_Entry_2017.csv"), "--images", str(archive / "images")]
        run = run_job("prepare", args, work / "prepare.json")
        written = run["summary"]["images"]["written"]
        run["images"] = written
        run["images_per_s_job"] = round(written / run["job_s"], 1)
        run["images_per_s_wall"] = round(written / run["wall_s"], 1)
        run["lake"] = os.path.relpath(lake.resolve(), ROOT)  # results name no machine paths
        del run["summary"]
        runs.append(run)
        log(f"  prepare {archive.name} #{i + 1}: {written} images, {run['job_s']} s in the job, {run['wall_s']} s wall")
    return runs


# -- 2: training input ---------------------------------------------------------------------------------
def training_input(store_url: str, labels: int, repeats: int, *, consumers_too: bool = True) -> dict:
    import cv2
    import pyarrow.parquet as pq
    import tensorflow as tf

    from xray_spark.lake.store import quiet_petastorm_warnings
    from xray_spark.train.data import ShardSpec, training_dataset

    quiet_petastorm_warnings()

    path = store_url.removeprefix("file://")
    table = pq.read_table(path, columns=["image", "split"])
    splits = table.column("split").to_pylist()
    blobs = [b for b, s in zip(table.column("image").to_pylist(), splits, strict=True) if s == "train"]
    decode_times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for blob in blobs:
            cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_UNCHANGED)
        decode_times.append(time.perf_counter() - start)
    decode_rate = len(blobs) / statistics.median(decode_times)
    # Two threads (cv2 releases the GIL while it decodes): what two cores of decode give.
    from concurrent.futures import ThreadPoolExecutor

    two_thread_times = []
    with ThreadPoolExecutor(2) as pool:
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in pool.map(lambda b: cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_UNCHANGED), blobs):
                pass
            two_thread_times.append(time.perf_counter() - start)
    two_thread_rate = len(blobs) / statistics.median(two_thread_times)

    batch = 32
    pipeline_times, counted = [], 0
    for i in range(repeats):
        start = time.perf_counter()
        counted = 0
        with training_dataset(
            store_url,
            ShardSpec("train"),
            image_size=SIZE,
            n_labels=labels,
            batch_size=batch,
            shuffle_buffer=512,
            seed=i,
        ) as ds:
            for images, _, _ in ds:
                counted += int(images.shape[0])
        pipeline_times.append(time.perf_counter() - start)
    pipeline_rate = counted / statistics.median(pipeline_times)

    consumers = {}
    for kind, model_batch, steps in (("small_cnn", 32, 8), ("densenet121", 16, 3)) if consumers_too else ():
        from xray_spark.models import build_model

        model = build_model(kind, labels, SIZE)
        model.compile(optimizer=tf.keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
        x = np.random.default_rng(0).integers(0, 255, (model_batch, SIZE, SIZE, 1), dtype=np.uint8)
        y = (np.random.default_rng(1).random((model_batch, labels)) < 0.1).astype(np.float32)
        model.train_on_batch(x, y)  # build and warm up
        start = time.perf_counter()
        for _ in range(steps):
            model.train_on_batch(x, y)
        consumers[kind] = {
            "batch": model_batch,
            "images_per_s": round(model_batch * steps / (time.perf_counter() - start), 1),
        }
        log(f"  {kind} trains at {consumers[kind]['images_per_s']} images/s")
    return {
        "train_images": len(blobs),
        "decode_loop": {
            "seconds": [round(t, 2) for t in decode_times],
            "images_per_s": round(decode_rate, 1),
            "what": "cv2.imdecode of the store's PNG bytes, one thread, bytes already in memory",
        },
        "decode_two_threads": {
            "seconds": [round(t, 2) for t in two_thread_times],
            "images_per_s": round(two_thread_rate, 1),
            "what": "the same loop over a pool of two threads",
        },
        "petastorm_tf_data": {
            "seconds": [round(t, 2) for t in pipeline_times],
            "images_per_s": round(pipeline_rate, 1),
            "what": "training_dataset(): make_batch_reader (2 threads, PNG bytes) -> tf.data decode_png "
            "(parallel map)/shuffle 512/batch 32, one epoch of the train split",
        },
        "ratio_to_decode_loop": round(pipeline_rate / decode_rate, 3),
        "ratio_to_two_thread_decode": round(pipeline_rate / two_thread_rate, 3),
        "consumers": consumers,
        "headroom_over": {k: round(pipeline_rate / v["images_per_s"], 1) for k, v in consumers.items()},
        "store": os.path.relpath(store_url.removeprefix("file://"), ROOT),
    }


# -- 3 and 4: scoring ------------------------------------------------------------------------------------
def train_model(lake: Path, work: Path) -> str:
    args = ["--conf", str(ROOT / "conf" / "local.yaml"), "--lake", str(lake), "--epochs", "1"]
    args += ["--set", "train.eval_max_rows=200"]
    run = run_job("train", args, work / "train.json")
    return run["summary"]["model_dir"]


def score_runs(lake: Path, model_dir: str, work: Path, repeats: int) -> list[dict]:
    runs = []
    if not (lake / "models" / Path(model_dir).name).is_dir():  # trained in another lake: register it here
        run_job("register_model", ["--lake", str(lake), "--model", model_dir], work / "register.json")
    for i in range(repeats):
        shutil.rmtree(lake / "tables" / "predictions", ignore_errors=True)
        args = ["--conf", str(ROOT / "conf" / "local.yaml"), "--lake", str(lake), "--model", model_dir]
        args += ["--heatmaps", "none"]  # scoring alone (bench/score_heatmaps.py measures heatmaps)
        run = run_job("score", args, work / "score.json")
        written = run["summary"]["written"]
        run["images"] = written
        run["images_per_s_job"] = round(written / run["job_s"], 1)
        run["images_per_s_wall"] = round(written / run["wall_s"], 1)
        del run["summary"]
        runs.append(run)
        log(f"  score {lake.name} #{i + 1}: {written} images, {run['job_s']} s in the job, {run['wall_s']} s wall")
    return runs


def predict_baseline(
    store_url: str, model_dir: str, repeats: int, threads: int = 2, part: tuple[int, int] = (0, 1), barrier: str = ""
) -> dict:
    """model.predict over the store's images already decoded into one array; TF limited to ``threads``. ``part``
    (k, n) keeps every n-th image from the k-th; with ``barrier`` (a folder), each repeat waits there for all n."""
    import cv2
    import pyarrow.parquet as pq
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    from xray_spark.models import load_model_safely

    model = load_model_safely(os.path.join(model_dir, "model.keras"))
    blobs = pq.read_table(store_url.removeprefix("file://"), columns=["image"]).column("image").to_pylist()
    k, n = part
    x = np.stack([cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_UNCHANGED) for b in blobs[k::n]])[..., None]
    model.predict(x[:64], batch_size=64, verbose=0)
    times = []
    for repeat in range(repeats):
        if barrier:  # every part starts each repeat together, so that each has its one core
            Path(barrier, f"{repeat}-{k}").touch()
            while len(list(Path(barrier).glob(f"{repeat}-*"))) < n:
                time.sleep(0.01)
        start = time.perf_counter()
        model.predict(x, batch_size=64, verbose=0)
        times.append(time.perf_counter() - start)
    return {
        "images": len(x),
        "seconds": [round(t, 2) for t in times],
        "images_per_s": round(len(x) / statistics.median(times), 1),
        "threads": threads,
    }


def predict_baseline_in_child(store_url: str, model_dir: str, repeats: int) -> dict:
    """TensorFlow's thread counts are fixed once it starts: the baseline gets a process of its own."""
    cmd = [sys.executable, __file__, "--predict-baseline", store_url, model_dir, str(repeats)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return json.loads(out.stdout.strip().splitlines()[-1])


def predict_baseline_per_core(store_url: str, model_dir: str, repeats: int, cores: int) -> dict:
    """model.predict as ``cores`` processes of one thread each, each over its share of the images at the same time
    (a small CNN's convolutions do not split well over threads); a repeat lasts as long as its slowest share."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, __file__, "--predict-baseline", store_url, model_dir, str(repeats), "--threads", "1"]
    with tempfile.TemporaryDirectory() as barrier:
        children = [
            subprocess.Popen(
                [*cmd, "--part", f"{k}/{cores}", "--barrier", barrier],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                env=env,
            )
            for k in range(cores)
        ]
        outs = [json.loads(child.communicate()[0].strip().splitlines()[-1]) for child in children]
    if any(child.returncode for child in children):
        raise RuntimeError("a share of the per-core predict baseline failed")
    seconds = [max(times) for times in zip(*(out["seconds"] for out in outs), strict=True)]
    images = sum(out["images"] for out in outs)
    return {
        "images": images,
        "seconds": seconds,
        "images_per_s": round(images / statistics.median(seconds), 1),
        "threads": 1,
        "processes": cores,
    }


# -- the whole run ---------------------------------------------------------------------------------
def machine() -> dict:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    mem = next(
        int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem / 2**20, 1),
        "python": platform.python_version(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=500, help="images in the 1x archive (default 500)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cache", default=str(ROOT / "bench" / ".cache"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "pipeline_cpu2.json"))
    parser.add_argument("--only", default=",".join(PARTS), help="comma-separated parts to (re)run")
    parser.add_argument("--predict-baseline", nargs=3, metavar=("STORE", "MODEL", "REPEATS"), help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=2, help=argparse.SUPPRESS)
    parser.add_argument("--part", default="0/1", help=argparse.SUPPRESS)
    parser.add_argument("--barrier", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.predict_baseline:
        store, model, repeats = args.predict_baseline
        part = tuple(int(v) for v in args.part.split("/"))
        print(json.dumps(predict_baseline(store, model, int(repeats), args.threads, part, args.barrier)))
        return
    only = set(args.only.split(","))
    unknown = only - set(PARTS)
    if unknown:
        parser.error(f"--only takes {', '.join(PARTS)}; got {sorted(unknown)}")
    cache = Path(args.cache)
    work = cache / "work"
    archives = make_inputs(cache, args.scale)
    out = Path(args.out)
    results: dict = json.loads(out.read_text()) if only != set(PARTS) and out.exists() else {}
    if "ingest" not in only and "ingest" not in results:
        parser.error(f"--only without ingest needs an earlier full run's {out} and bench/.cache/work")
    partial = bool(results)
    if partial:  # a partial rerun: the parts not rerun keep their date; the rerun ones say theirs
        results.setdefault("parts_rerun", {}).update(dict.fromkeys(sorted(only), time.strftime("%Y-%m-%d")))
    else:
        results["date"] = time.strftime("%Y-%m-%d")
    results.update(
        {
            "machine": machine(),
            "command": f"python bench/pipeline.py --scale {args.scale} --repeats {args.repeats}",
            "image": "synthetic 1024 x 1024 8-bit PNG -> 224 px store",
            "spark": "local[2], conf/local.yaml defaults (driver memory 4g)",
        }
    )
    started = time.monotonic()

    if "ingest" in only:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        log("1. ingest: baseline")
        baseline = ingest_baseline(archives["1x"], args.repeats)
        log(f"  one core: {baseline['one_core_images_per_s']} images/s")
        prepare = {}
        for name, archive in archives.items():
            log(f"1/4. ingest: prepare {name}")
            prepare[name] = prepare_runs(archive, work, repeats_for(name, args.repeats))
        results["ingest"] = {"baseline": baseline, "prepare": prepare}
    prepare = results["ingest"]["prepare"]

    lake_4x = ROOT / prepare["4x"][-1]["lake"]
    store_4x = "file://" + str(lake_4x / "petastorm" / "nih")
    labels = len(json.loads((lake_4x / "petastorm" / "nih" / "_xray_store.json").read_text())["labels"])
    if "input" in only:
        log("2. training input")
        results["training_input"] = training_input(store_4x, labels, args.repeats)
        lake_16x = ROOT / prepare["16x"][-1]["lake"]  # a longer epoch: the reader's start-up weighs less
        store_16x = "file://" + str(lake_16x / "petastorm" / "nih")
        results["training_input_16x"] = training_input(store_16x, labels, args.repeats, consumers_too=False)

    if "scoring" in only:
        log("3. scoring: a model to score with (small_cnn, 1 epoch on the 1x store)")
        model_dir = train_model(ROOT / prepare["1x"][-1]["lake"], work)
        score = {}
        for name in SIZES:
            score[name] = score_runs(ROOT / prepare[name][-1]["lake"], model_dir, work, repeats_for(name, args.repeats))
        results["scoring"] = {
            "model": "small_cnn",
            "baseline": predict_baseline_in_child(store_4x, model_dir, args.repeats),
            "score": score,
        }
    if "nightly" in only:
        log("6. a night: 500 new studies, one session vs three jobs")
        unique = archives["1x"].parent / "unique"
        night = night_archive(unique, archives["1x"].parent / "night")
        base = ROOT / prepare["1x"][-1]["lake"]  # its studies scored by the model of part 3
        if not any((base / "models").glob("*/model.json")):
            parser.error("--only nightly needs part 3 (scoring) run on this ingest: add scoring to --only")
        conf = str(ROOT / "conf" / "local.yaml")
        results["nightly"] = nightly_runs(run_job, conf, base, night, work, max(1, args.repeats - 1))
        log(f"  median wall: {results['nightly']['median_wall_s']}")
    results["summary"] = summarise(results)
    results["rerun_seconds" if partial else "seconds"] = round(time.monotonic() - started)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results["summary"], indent=2))
    log(f"written to {out}")


def _rates(runs: list[dict], limit: float, limit_name: str) -> dict:
    """Median images/s of a job's runs (in the job and wall clock) and their ratio to ``limit``."""
    job_rate, wall_rate = median_of(runs, "images_per_s_job"), median_of(runs, "images_per_s_wall")
    return {
        "images": runs[0]["images"],
        "job_images_per_s": job_rate,
        "wall_images_per_s": wall_rate,
        f"ratio_job_to_{limit_name}": round(job_rate / limit, 3),
        f"ratio_wall_to_{limit_name}": round(wall_rate / limit, 3),
    }


def summarise(results: dict) -> dict:
    ingest = results["ingest"]
    limit = ingest["baseline"]["two_cores_limit_images_per_s"]
    scoring = results["scoring"]
    predict = scoring["baseline"]["images_per_s"]
    out: dict = {"ingest": {}, "scoring": {}, "growth": {}, "memory_peak_mib": {}}
    for name in SIZES:
        runs, sruns = ingest["prepare"][name], scoring["score"][name]
        out["ingest"][name] = _rates(runs, limit, "two_core_limit")
        out["scoring"][name] = _rates(sruns, predict, "predict")
        out["memory_peak_mib"][name] = {
            "prepare": max((r["peak_rss_mib"] for r in runs), key=lambda p: p["total"]),
            "score": max((r["peak_rss_mib"] for r in sruns), key=lambda p: p["total"]),
        }
    for job, key in (("ingest", "prepare"), ("scoring", "score")):
        source = ingest["prepare"] if key == "prepare" else scoring["score"]
        per_image = {n: median_of(source[n], "job_s") / source[n][0]["images"] * 1000 for n in SIZES}
        xs = np.array([source[n][0]["images"] for n in SIZES], dtype=float)
        ys = np.array([median_of(source[n], "job_s") for n in SIZES])
        slope, intercept = np.polyfit(xs, ys, 1)
        wall_slope, wall_intercept = np.polyfit(xs, [median_of(source[n], "wall_s") for n in SIZES], 1)
        out["growth"][job] = {
            "fit_seconds_wall": {
                "fixed": round(float(wall_intercept), 2),
                "per_image_ms": round(float(wall_slope) * 1000, 3),
            },
            "ms_per_image_in_job": {n: round(v, 2) for n, v in per_image.items()},
            "spread_4x_vs_1x": round(per_image["1x"] / per_image["4x"] - 1, 3),
            "spread_16x_vs_1x": round(per_image["1x"] / per_image["16x"] - 1, 3),
            "fit_seconds": {"fixed": round(float(intercept), 2), "per_image_ms": round(float(slope) * 1000, 3)},
        }
    out["training_input"] = {
        "pipeline_images_per_s": results["training_input"]["petastorm_tf_data"]["images_per_s"],
        "decode_loop_images_per_s": results["training_input"]["decode_loop"]["images_per_s"],
        "ratio": results["training_input"]["ratio_to_decode_loop"],
        "ratio_to_two_thread_decode": results["training_input"].get("ratio_to_two_thread_decode"),
        "at_16x": {
            k: results["training_input_16x"][k]
            for k in ("train_images", "ratio_to_decode_loop", "ratio_to_two_thread_decode")
        }
        if "training_input_16x" in results
        else None,
        "headroom_over": results["training_input"]["headroom_over"],
    }
    out["limits"] = {"ingest_two_core_images_per_s": limit, "predict_images_per_s": predict}
    if "nightly" in results:
        night = results["nightly"]
        out["nightly"] = {k: night[k] for k in ("new_studies", "median_wall_s", "saved_wall_s")}
    return out


if __name__ == "__main__":
    main()
