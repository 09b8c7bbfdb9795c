"""The NIH release's size in one run: each job and the peer a Spark user would pick instead, at 1/16, 1/4
and the whole release, on the same inputs and cores.

    python bench/release.py [--sizes 16,4,1] [--out bench/results/release_cpu2.json]   (make bench-release)

Inputs: the real metadata file's rows as they are (names, patients, follow-ups, labels), the
patients of a fraction chosen by patient id (``id % 16 == 0`` for 1/16, ``% 4`` for 1/4), each
image a hard link to one of the real 1024 px films of the NIH sample (``../shared/data/nih-sample``),
in turn, so every size decodes the same kind of file. Per size, in one lake:

1. ``prepare`` (224 px store) against two peers: the plain-Python limit (the library's own
   read-decode-resize-encode on one core, times two) and the Databricks reference pattern
   (``spark.read.format("binaryFile")``, a pandas UDF that decodes and resizes, the metadata CSV
   joined, written to Parquet), in a process of its own with the same master;
2. ``score --heatmaps none`` (and ``top:100``) against ``model.predict`` over decoded arrays (the
   plain-Python limit) and ``pyspark.ml.functions.predict_batch_udf`` with the same Keras model
   (``make_predict_fn`` loading it once per worker, as Spark's documentation does it);
3. ``worklist``, then five queries through the SQL server (each asked twice: cold, then warm).

Per step: wall time, time in the job, images per second, the peak resident memory of the JVM and
of the Python processes. The champion (``small_cnn``, one epoch) is trained once on the smallest
size and registered in the others.
"""

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import (  # noqa: E402
    SIZE,
    ingest_baseline,
    log,
    machine,
    predict_baseline_in_child,
    predict_baseline_per_core,
    run_job,
    run_watched,
)

CONF = str(ROOT / "conf" / "local.yaml")
SAMPLE = Path(os.environ.get("XRAY_SPARK_NIH_SAMPLE", ROOT.parent / "shared" / "data" / "nih-sample"))
#: The five typical questions (``{patient}``: one patient of the archive).
QUERIES = {
    "worklist top 100": "SELECT risk_rank, image_id, risk_score FROM xray.worklist ORDER BY risk_rank LIMIT 100",
    "prevalence per finding": "SELECT finding, count(*) AS called FROM xray.latest_predictions "
    "LATERAL VIEW explode(called) f AS finding GROUP BY finding ORDER BY finding",
    "one patient's progression": "SELECT follow_up, finding, probability, change FROM xray.progression "
    "WHERE patient_id = {patient} ORDER BY follow_up, finding",
    "films per score date": "SELECT score_date, count(*) AS films FROM xray.predictions GROUP BY score_date",
    "join with studies": "SELECT s.split, count(*) AS n, avg(p.top_probability) AS mean_top FROM xray.studies s "
    "JOIN xray.latest_predictions p ON s.image_id = p.image_id AND s.dataset = p.dataset GROUP BY s.split",
}


def release_archive(cache: Path, every: int) -> Path:
    """The patients with ``id % every == 0`` of the real metadata, their images hard links to the sample's films."""
    folder = cache / f"release-1of{every}"
    if (folder / "Data_Entry_2017.csv").exists():
        return folder
    films = sorted((SAMPLE / "images").glob("*.png"))
    if not films:
        raise SystemExit(f"the NIH sample's images are not at {SAMPLE / 'images'}")
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "images").mkdir(parents=True)
    with gzip.open(SAMPLE / "Data_Entry_2017_v2020.csv.gz", "rt", encoding="utf-8") as fh:
        header, *rows = fh.read().splitlines()
    kept = [header]
    for row in rows:
        name, _, rest = row.partition(",")
        patient = int(rest.split(",")[2])
        if patient % every == 0:
            os.link(films[(len(kept) - 1) % len(films)], folder / "images" / name)
            kept.append(row)
    (folder / "Data_Entry_2017.csv").write_text("\n".join(kept) + "\n", encoding="utf-8")
    log(f"  archive 1/{every}: {len(kept) - 1} films")
    return folder


def event_log_sets(folder: Path) -> list[str]:
    """Overrides that make a job write Spark's event log (task results, the driver's heap per stage) to ``folder``."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    props = {
        "spark.eventLog.enabled": "true",
        "spark.eventLog.dir": f"file://{folder}",
        "spark.eventLog.logStageExecutorMetrics": "true",
        "spark.executor.metrics.pollingInterval": "500ms",
    }
    return [arg for k, v in props.items() for arg in ("--set", f"spark.conf.{k}={v}")]


def driver_side(folder: Path) -> dict:
    """From the event log: the bytes tasks sent back to the driver, and the driver's peak heap, in all and per stage."""
    results, largest, tasks, stages, heap = 0, 0, 0, {}, {}
    for log_file in folder.iterdir():
        for line in log_file.open(encoding="utf-8"):
            event = json.loads(line)
            kind = event.get("Event")
            if kind == "SparkListenerTaskEnd":
                size = (event.get("Task Metrics") or {}).get("Result Size", 0)
                results, largest, tasks = results + size, max(largest, size), tasks + 1
            elif kind == "SparkListenerStageCompleted":
                info = event["Stage Info"]
                stages[info["Stage ID"]] = info["Stage Name"].split(" at ")[0]
            elif kind == "SparkListenerStageExecutorMetrics" and event.get("Executor ID") == "driver":
                used = event["Executor Metrics"].get("JVMHeapMemory", 0)
                heap[event["Stage ID"]] = max(heap.get(event["Stage ID"], 0), used)
    top = sorted(heap.items(), key=lambda kv: -kv[1])[:3]
    return {
        "task_results_bytes": results,
        "largest_task_result_bytes": largest,
        "tasks": tasks,
        "driver_peak_heap_mib": round(max(heap.values(), default=0) / 2**20),
        "stages_by_driver_heap": [{"stage": stages.get(sid, str(sid)), "heap_mib": round(h / 2**20)} for sid, h in top],
    }


def job(name: str, args: list[str], work: Path) -> dict:
    """``run_job`` with Spark's event log on, and what it says of the driver."""
    events = work / "events" / name
    run = run_job(name, [*args, *event_log_sets(events)], work / f"{name}.json")
    return run | {"driver": driver_side(events)}


def _step(run: dict, images: int) -> dict:
    run = {k: v for k, v in run.items() if k != "summary"}
    run["images"] = images
    run["images_per_s_job"] = round(images / run["job_s"], 1) if run.get("job_s") else None
    run["images_per_s_wall"] = round(images / run["wall_s"], 1)
    return run


def peer(kind: str, args: list[str], work: Path) -> dict:
    """A peer in a process of its own (its wall time, and its peak memory as ``run_job`` measures it)."""
    out, events = work / f"peer-{kind}.json", work / "events" / f"peer-{kind}"
    cmd = [sys.executable, __file__, f"--peer-{kind}", *args, "--peer-out", str(out), "--peer-events", str(events)]
    watched = run_watched(cmd, {**os.environ, "PYTHONPATH": str(ROOT)})
    return json.loads(out.read_text()) | watched | {"driver": driver_side(events)}


def _peer_session(events: str):
    from xray_spark.config import load_settings
    from xray_spark.session import build_session

    sets = event_log_sets(Path(events))
    settings = load_settings(CONF, sets[1::2])
    return build_session(settings.spark, app_name="xray-spark release peer")


def peer_ingest(archive: str, out: str, events: str) -> dict:
    """Databricks' pattern: binaryFile, a pandas UDF that decodes and resizes, the CSV joined, Parquet."""
    import pandas as pd
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    spark = _peer_session(events)
    started = time.monotonic()

    @F.pandas_udf(T.BinaryType())
    def resized(content: pd.Series) -> pd.Series:
        import cv2
        import numpy as np

        def one(data: bytes) -> bytes:
            pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
            small = cv2.resize(pixels, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
            return cv2.imencode(".png", small)[1].tobytes()

        return content.map(one)

    files = spark.read.format("binaryFile").option("pathGlobFilter", "*.png").load(f"{archive}/images")
    files = files.select(F.element_at(F.split("path", "/"), -1).alias("Image Index"), resized("content").alias("image"))
    meta = spark.read.option("header", "true").csv(f"{archive}/Data_Entry_2017.csv")
    table = files.join(meta, "Image Index")
    for name in table.columns:  # Parquet takes no spaces or brackets in column names
        table = table.withColumnRenamed(name, "".join(c if c.isalnum() else "_" for c in name))
    table.write.mode("overwrite").parquet(out)
    images = spark.read.parquet(out).count()
    seconds = time.monotonic() - started
    spark.stop()
    return {"images": images, "job_s": round(seconds, 2), "images_per_s_job": round(images / seconds, 1)}


def peer_score(store: str, model_dir: str, out: str, events: str, batch_size: int = 64) -> dict:
    """Spark's documented way, tuned: ``predict_batch_udf`` over the store's PNG bytes, ``make_predict_fn`` loading
    the Keras model once per worker and decoding each batch of 64 (a column of decoded float arrays instead holds
    200 KB per film in Arrow: 17 GiB of Python processes at 7,142 films here)."""
    import numpy as np
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    spark = _peer_session(events)
    started = time.monotonic()
    path = os.path.join(model_dir, "model.keras")

    def make_predict_fn():
        import cv2

        from xray_spark.models import load_model_safely

        model = load_model_safely(path)

        def predict(pngs: np.ndarray) -> np.ndarray:
            pixels = np.stack([cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_GRAYSCALE) for b in pngs])
            return model.predict(pixels[..., None], batch_size=batch_size, verbose=0)

        return predict

    labels = json.loads(Path(model_dir, "model.json").read_text())["labels"]
    predict = predict_batch_udf(make_predict_fn, return_type=T.ArrayType(T.FloatType()), batch_size=batch_size)
    scored = spark.read.parquet(store).select("image_id", predict("image").alias("p"))
    columns = [F.col("p")[i].alias(f) for i, f in enumerate(labels)]
    scored.select("image_id", *columns).write.mode("overwrite").parquet(out)
    images = spark.read.parquet(out).count()
    seconds = time.monotonic() - started
    spark.stop()
    agree = same_outputs(out, Path(store).parents[1] / "tables" / "predictions", labels)
    return {"images": images, "job_s": round(seconds, 2), "images_per_s_job": round(images / seconds, 1)} | agree


def same_outputs(peer_out: str, predictions: Path, labels: list[str]) -> dict:
    """How far the peer's outputs are from the model outputs ``score`` stored (``raw_<finding>``), film by film."""
    import pyarrow.parquet as pq

    from xray_spark.labels import column_name

    theirs = pq.read_table(peer_out).to_pandas().set_index("image_id").sort_index()
    ours = pq.read_table(predictions).to_pandas().set_index("image_id").sort_index()
    ours = ours[[f"raw_{column_name(f)}" for f in labels]].set_axis(labels, axis=1)
    common = theirs.index.intersection(ours.index)
    gap = float((theirs.loc[common, labels] - ours.loc[common, labels]).abs().to_numpy().max())
    return {"films_compared_with_score": len(common), "largest_output_difference": round(gap, 6)}


def queries(lake: Path, work: Path) -> dict:
    """The five questions through the SQL server, each cold then warm (seconds)."""
    from impala.dbapi import connect

    from xray_spark.session import free_port

    port, state = free_port(), work / "sql-state"
    server = [sys.executable, "-m", "xray_spark.server"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = [*server, "start", "--state-dir", str(state), "--lake", str(lake), "--port", str(port)]
    subprocess.run(start, check=True, env=env, capture_output=True, text=True, timeout=600)
    out: dict = {}
    try:
        conn = connect(host="127.0.0.1", port=port, auth_mechanism="PLAIN", user="bench")
        cursor = conn.cursor()
        cursor.execute("SELECT patient_id FROM xray.latest_predictions LIMIT 1")
        patient = cursor.fetchall()[0][0]
        for name, sql in QUERIES.items():
            times, rows = [], 0
            for _ in range(2):
                started = time.perf_counter()
                cursor.execute(sql.format(patient=patient))
                rows = len(cursor.fetchall())
                times.append(round(time.perf_counter() - started, 3))
            out[name] = {"cold_s": times[0], "warm_s": times[1], "rows": rows}
            log(f"    sql {name}: {out[name]}")
        cursor.close()  # before the connection: a cursor collected later would reconnect to a stopped server
        conn.close()
    finally:
        subprocess.run([*server, "stop", "--state-dir", str(state)], env=env, capture_output=True, timeout=300)
    return out


def lake_of(every: int, work: Path) -> Path:
    return work / f"lake-1of{every}"


def one_size(every: int, cache: Path, work: Path, model_dir: str | None, result: dict, save) -> str:
    """Every step at one size into ``result`` (``save()`` after each); the model directory (trained here when none
    is given)."""
    archive = release_archive(cache, every)
    lake = lake_of(every, work)
    conf = ["--conf", CONF, "--lake", str(lake), "--set", f"image.size={SIZE}"]
    result["films"] = sum(1 for _ in (archive / "images").iterdir())
    result["prepare"] = prepare_once(archive, lake, work)
    log(f"  1/{every} prepare: {result['prepare']}")
    save()
    result["ingest_peer_binaryfile"] = peer("ingest", [str(archive), str(work / f"peer-store-1of{every}")], work)
    shutil.rmtree(work / f"peer-store-1of{every}", ignore_errors=True)
    log(f"  1/{every} ingest peer: {result['ingest_peer_binaryfile']}")
    save()
    if model_dir is None:
        trained = run_job("train", [*conf, "--epochs", "1", "--set", "train.eval_max_rows=500"], work / "train.json")
        model_dir = trained["summary"]["model_dir"]
    else:
        run_job("register_model", ["--lake", str(lake), "--model", model_dir], work / "register.json")
    version = Path(model_dir).name
    run_job("promote", [*conf, "--model-version", version, "--reason", "the release benchmark"], work / "p.json")
    for heatmaps in HEATMAPS:
        result[f"score_heatmaps_{heatmaps}"] = score_once(lake, work, heatmaps)
        log(f"  1/{every} score --heatmaps {heatmaps}: {result[f'score_heatmaps_{heatmaps}']}")
        save()
    result["score_peer_predict_batch_udf"] = score_peer(lake, model_dir, work)
    log(f"  1/{every} score peer: {result['score_peer_predict_batch_udf']}")
    save()
    run = job("worklist", [*conf, "--limit", "100"], work)
    result["worklist"] = {k: v for k, v in run.items() if k != "summary"}
    save()
    result["sql"] = queries(lake, work)
    save()
    return model_dir


HEATMAPS = ("none", "top:100")


def prepare_once(archive: Path, lake: Path, work: Path) -> dict:
    """``prepare`` of ``archive`` into a new ``lake``."""
    shutil.rmtree(lake, ignore_errors=True)
    conf = ["--conf", CONF, "--lake", str(lake), "--set", f"image.size={SIZE}"]
    meta = ["--metadata", str(archive / "Data_Entry_2017.csv"), "--images", str(archive / "images")]
    run = job("prepare", [*conf, *meta], work)
    return _step(run, run["summary"]["images"]["written"])


def prepare_again(every: int, cache: Path, work: Path) -> dict:
    """``prepare`` measured again in a lake of its own (the size's lake, with its scores, stays as it is)."""
    lake = work / f"lake-1of{every}-prepare"
    try:
        return prepare_once(release_archive(cache, every), lake, work)
    finally:
        shutil.rmtree(lake, ignore_errors=True)


def score_once(lake: Path, work: Path, heatmaps: str) -> dict:
    """``score --heatmaps <heatmaps>`` of the whole store into empty prediction and heatmap tables."""
    shutil.rmtree(lake / "tables" / "predictions", ignore_errors=True)
    shutil.rmtree(lake / "tables" / "heatmaps", ignore_errors=True)
    conf = ["--conf", CONF, "--lake", str(lake), "--set", f"image.size={SIZE}"]
    run = job("score", [*conf, "--heatmaps", heatmaps], work)
    return _step(run, run["summary"]["written"])


def score_peer(lake: Path, model_dir: str, work: Path) -> dict:
    done = peer("score", [f"{lake}/petastorm/nih", model_dir, str(work / "peer-scores")], work)
    shutil.rmtree(work / "peer-scores", ignore_errors=True)
    return done


#: Steps ``--redo`` measures again on the lakes a run left (after a change), keeping the earlier figures.
#: Each is called with the size's denominator, the cache and work folders, and the results' model directory.
REDO = {
    "prepare": lambda every, cache, work, model_dir: prepare_again(every, cache, work),
    **{
        f"score_heatmaps_{h}": (lambda every, cache, work, model_dir, h=h: score_once(lake_of(every, work), work, h))
        for h in HEATMAPS
    },
    "sql": lambda every, cache, work, model_dir: queries(lake_of(every, work), work),
    "score_peer_predict_batch_udf": lambda every, cache, work, model_dir: score_peer(
        lake_of(every, work), model_dir, work
    ),
}


def model_of(results: dict) -> str:
    """The champion's folder (kept in the results relative to the repository)."""
    return str(ROOT / results["model_dir"])


def redo(results: dict, steps: list[str], sizes: list[int], cache: Path, work: Path, save) -> None:
    """``steps`` again at ``sizes`` (those the results hold); the earlier figures stay under ``<step>_before``."""
    for size, measured in results["sizes"].items():
        every = int(size.split("/")[1])
        if every not in sizes:
            continue
        for step in steps:
            log(f"  {size} {step} again")
            if step in measured:
                measured[f"{step}_before"] = measured[step]
            measured[step] = REDO[step](every, cache, work, model_of(results))
            log(f"  {size} {step}: {measured[step]}")
            save()


def limits(every: int, cache: Path, work: Path, model_dir: str) -> dict:
    """The plain-Python limits: decoding on the sample's films, and model.predict over the smallest store, the
    faster of one process on every core's thread and one single-thread process per core."""
    ingest = ingest_baseline(SAMPLE, repeats=2)
    store = f"file://{lake_of(every, work) / 'petastorm' / 'nih'}"
    one_process = predict_baseline_in_child(store, model_dir, 2)
    per_core = predict_baseline_per_core(store, model_dir, 2, os.cpu_count() or 1)
    # the limit is the faster way to run the model, each form by its fastest repeat
    best = max(one_process, per_core, key=lambda out: out["images"] / min(out["seconds"]))
    return {"ingest": ingest, "predict": best, "predict_one_process": one_process, "predict_per_core": per_core}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="16,4,1", help="denominators of the release's patients (default 16,4,1)")
    parser.add_argument("--cache", default=str(ROOT / "bench" / ".cache"))
    parser.add_argument("--work", default=str(ROOT / "bench" / ".cache" / "release-work"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "release_cpu2.json"))
    parser.add_argument("--resume", action="store_true", help="keep the sizes --out already holds; run the rest")
    parser.add_argument(
        "--redo", nargs="+", choices=sorted(REDO), help="measure steps again (at --sizes) on the lakes --out describes"
    )
    parser.add_argument("--limits-again", action="store_true", help="measure the plain-Python limits again")
    parser.add_argument("--peer-ingest", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--peer-score", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--peer-out", help=argparse.SUPPRESS)
    parser.add_argument("--peer-events", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer_ingest or args.peer_score:
        events = args.peer_events
        done = peer_ingest(*args.peer_ingest, events) if args.peer_ingest else peer_score(*args.peer_score, events)
        Path(args.peer_out).write_text(json.dumps(done))
        return
    cache, work = Path(args.cache), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    sizes = sorted((int(s) for s in args.sizes.split(",")), reverse=True)  # the smallest first: it trains
    started = time.monotonic()
    results: dict = {"benchmark": "release", "machine": machine(), "when": time.strftime("%Y-%m-%d"), "sizes": {}}
    # the sizes already measured, with their champion
    if (args.resume or args.redo or args.limits_again) and Path(args.out).exists():
        results = json.loads(Path(args.out).read_text())

    def save() -> None:  # each step kept as it finishes
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")

    if args.redo:
        redo(results, args.redo, sizes, cache, work, save)
        return
    if args.limits_again:  # on the smallest size's lake, which the run left
        results["plain_python_limits_before"] = results["plain_python_limits"]
        smallest = max(int(size.split("/")[1]) for size in results["sizes"])
        results["plain_python_limits"] = limits(smallest, cache, work, model_of(results))
        save()
        return
    model_dir = model_of(results) if "model_dir" in results else None
    for every in sizes:
        if "sql" in results["sizes"].get(f"1/{every}", {}):  # a size cut short is measured again from the start
            continue
        results["sizes"][f"1/{every}"] = {}
        model_dir = one_size(every, cache, work, model_dir, results["sizes"][f"1/{every}"], save)
        results["model_dir"] = os.path.relpath(model_dir, ROOT)  # the results name no folder of this machine
        if every == sizes[0]:
            results["plain_python_limits"] = limits(every, cache, work, model_dir)
        save()
    results["wall_s"] = round(time.monotonic() - started, 1)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    json.dump(results, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
