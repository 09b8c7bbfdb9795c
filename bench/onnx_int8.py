"""ONNX Runtime fp32 and int8 against the compiled TensorFlow graph, on the same films and cores, in one run.

    python bench/onnx_int8.py --lake LAKE [--model-version V] [--dataset NAME] [--threads 2] [--repeats 3]
                              [--densenet-side 224] [--out bench/results/onnx_int8_cpu2.json]

The lake's model (the champion by default; after ``make demo``: ``--lake lake``) is exported
to ONNX (tf2onnx), registered with its card, and quantized by the product's own job code
(static, calibrated on validation films; and dynamic). Each runtime then predicts the test
split's films (the same array, batches of ``score.batch_size``) ``--repeats`` times; images/s
is the best repeat. Each gets ``--threads`` threads (TensorFlow's intra-op pool, ONNX
Runtime's). The mean AUROC of each on the test films (findings with both classes) shows what
int8 costs in ranking. A DenseNet-121 (random weights: speed only) at ``--densenet-side``
is timed the same way, as the model a hospital would bring, with the films a second whose
heatmaps it draws by class activation maps and by occlusion. The versions it registers carry the
run's time, so each run measures the export and quantization of the code it runs with.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import log, machine  # noqa: E402  (bench/pipeline.py, beside this file)


def _export(model, out: Path) -> Path:
    import tf2onnx

    from xray_spark.tf_quiet import import_tensorflow

    tf = import_tensorflow()
    spec = [tf.TensorSpec([None, *model.input_shape[1:]], tf.uint8, name="film")]
    tf2onnx.convert.from_keras(model, input_signature=spec, opset=17, output_path=str(out))
    return out


def _card(out: Path, version: str, labels: list[str], meta: dict) -> Path:
    import yaml

    onnx = {"input": "film", "output": "probabilities", "outputs": labels, "findings": {x: x for x in labels}}
    kept = {k: meta[k] for k in ("thresholds", "calibration", "dataset") if meta.get(k) is not None}
    out.write_text(yaml.safe_dump({"version": version, "onnx": {**onnx, "dtype": "uint8"}, **kept}))
    return out


def _throughput(predict, films: np.ndarray, batch: int, repeats: int) -> tuple[float, np.ndarray]:
    predict(films[:batch])  # warm: graphs traced, sessions' first runs
    best, out = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        out = np.concatenate([predict(films[i : i + batch]) for i in range(0, len(films), batch)])
        best = min(best, time.perf_counter() - started)
    return len(films) / best, out


def _mean_auroc(truth: np.ndarray, probabilities: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    both = [j for j in range(truth.shape[1]) if 0 < truth[:, j].sum() < len(truth)]
    return float(np.mean([roc_auc_score(truth[:, j], probabilities[:, j]) for j in both]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lake", required=True)
    parser.add_argument("--model-version")
    parser.add_argument("--dataset")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--densenet-side", type=int, default=224)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "onnx_int8_cpu2.json"))
    args = parser.parse_args()
    os.environ["XRAY_SPARK_ONNX_THREADS"] = str(args.threads)

    from xray_spark.config import load_settings
    from xray_spark.jobs.quantize import validation_films
    from xray_spark.keras_runtime import KerasRuntime
    from xray_spark.lake import Lake
    from xray_spark.lake.schema import decode_labels
    from xray_spark.model_runtime import open_runtime
    from xray_spark.models import build_model, load_model_safely
    from xray_spark.onnx.quantize import quantized_folder
    from xray_spark.onnx.runtime import model_folder
    from xray_spark.registry import register_model, registered_row, resolve_model
    from xray_spark.session import build_session
    from xray_spark.tf_quiet import import_tensorflow

    tf = import_tensorflow()
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    settings = load_settings(ROOT / "conf" / "local.yaml", [f"lake={Path(args.lake).resolve()}"])
    spark = build_session(settings.spark, app_name="bench onnx int8")
    lake = Lake.at(settings.lake)
    parent = resolve_model(spark, lake, version=args.model_version)
    dataset = args.dataset or parent.dataset or settings.dataset
    log(f"model {parent.version} ({parent.kind}, {parent.size} px) on {dataset}")
    store = spark.read.parquet(lake.store_url(dataset)).where("split = 'test'").orderBy("image_id")
    rows = store.select("image", "labels").collect()
    import cv2

    films = np.stack([cv2.imdecode(np.frombuffer(r["image"], np.uint8), 0)[..., None] for r in rows])
    truth = np.stack([decode_labels(r["labels"]) for r in rows])
    calibration = validation_films(spark, lake, dataset, 200)
    run = time.strftime("%Y%m%dT%H%M%S")  # each run exports and quantizes afresh, as the product's code is now
    versions = {"onnx": f"{parent.version}-onnx-{run}", "static": f"{parent.version}-onnx-{run}-int8"}
    versions["dynamic"] = f"{parent.version}-onnx-{run}-int8-dynamic"
    with tempfile.TemporaryDirectory(prefix="bench-onnx-") as scratch:
        work = Path(scratch)
        if registered_row(spark, lake, versions["onnx"]) is None:
            exported = _export(load_model_safely(parent.model_file), work / "model.onnx")
            card = _card(work / "card.yaml", versions["onnx"], parent.labels, parent.meta)
            register_model(spark, lake, model_folder(str(exported), str(card), str(work / "onnx")), dataset=dataset)
        onnx = resolve_model(spark, lake, version=versions["onnx"])
        for method in ("static", "dynamic"):
            if registered_row(spark, lake, versions[method]) is None:
                folder = quantized_folder(onnx, str(work / method), versions[method], method, calibration)
                register_model(spark, lake, folder, dataset=dataset)
    cards = {"tensorflow graph": parent, **{k: resolve_model(spark, lake, version=v) for k, v in versions.items()}}
    batch = settings.score.batch_size
    results: dict = {}
    for name, card in cards.items():
        rate, out = _throughput(open_runtime(card.model_file).predict, films, batch, args.repeats)
        results[name] = {
            "version": card.version,
            "images_per_s": round(rate, 1),
            "mean_auroc_test": round(_mean_auroc(truth, out), 4),
            "file_bytes": os.path.getsize(card.model_file),
        }
        log(f"{name}: {results[name]}")
    tf_rate = results["tensorflow graph"]["images_per_s"]
    for name in ("onnx", "static", "dynamic"):
        results[name]["vs_tensorflow_graph"] = round(results[name]["images_per_s"] / tf_rate, 2)
    densenet = _densenet(build_model, KerasRuntime, args, batch)
    spark.stop()
    report = {
        "what": "ONNX Runtime fp32, int8 static and int8 dynamic against the compiled TensorFlow graph: the same "
        "test films and threads, one process",
        "machine": machine(),
        "threads": args.threads,
        "model": {"version": parent.version, "kind": parent.kind, "side": parent.size, "test_films": len(films)},
        "runtimes": results,
        "int8_static_auroc_minus_fp32": round(
            results["static"]["mean_auroc_test"] - results["onnx"]["mean_auroc_test"], 4
        ),
        "densenet121_random_weights": densenet,
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    log(f"written {args.out}")


def _densenet(build_model, keras_runtime, args, batch: int) -> dict:
    """A DenseNet-121 with random weights at ``--densenet-side``: images/s of the TensorFlow graph, ONNX fp32 and
    int8 static (calibrated on its own random films), on 64 films."""
    from xray_spark.onnx.quantize import quantize_file
    from xray_spark.onnx.runtime import OnnxCard, OnnxRuntime

    side = args.densenet_side
    films = np.random.default_rng(0).integers(0, 256, (64, side, side, 1), dtype=np.uint8)
    model = build_model("densenet121", 14, side)
    out: dict = {"side": side, "films": len(films)}
    rate, _ = _throughput(keras_runtime(model).predict, films, min(batch, 16), args.repeats)
    out["tensorflow graph"] = round(rate, 1)
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="bench-densenet-") as scratch:
        exported = _export(model, Path(scratch) / "densenet.onnx")
        labels = [f"o{i}" for i in range(14)]
        from xray_spark.labels import FINDINGS

        card = OnnxCard("film", "probabilities", labels, dict(zip(labels, FINDINGS, strict=True)), dtype="uint8")
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads

        def runtime(path: str) -> OnnxRuntime:
            return OnnxRuntime(ort.InferenceSession(path, options, providers=["CPUExecutionProvider"]), card, path)

        fp32 = runtime(str(exported))
        int8_file = str(Path(scratch) / "densenet-int8.onnx")
        quantize_file(str(exported), int8_file, "static", films[:32], fp32)
        for name, path in (("onnx", str(exported)), ("static", int8_file)):
            rate, _ = _throughput(runtime(path).predict, films, min(batch, 16), args.repeats)
            out[name] = round(rate, 1)
            out[f"{name}_bytes"] = os.path.getsize(path)
        out["heatmaps_per_s"] = _heatmap_rates(str(exported), card, films, args.threads)
    out["onnx_vs_tensorflow_graph"] = round(out["onnx"] / out["tensorflow graph"], 2)
    out["static_vs_tensorflow_graph"] = round(out["static"] / out["tensorflow graph"], 2)
    log(f"densenet121: {out}")
    return out


def _heatmap_rates(path: str, card, films: np.ndarray, threads: int) -> dict:
    """Films a second whose heatmap the ONNX runtime draws: class activation maps (found in the graph) on 16 films,
    occlusion (65 forward passes a film) on 2."""
    import onnx

    from xray_spark.onnx.cam import find_cam
    from xray_spark.onnx.runtime import OnnxRuntime

    os.environ["XRAY_SPARK_ONNX_THREADS"] = str(threads)
    rates = {}
    for name, cam, n in (("cam", find_cam(onnx.load(path)), 16), ("occlusion", None, 2)):
        runtime = OnnxRuntime.build(path, dataclasses.replace(card, cam=cam))
        runtime.explain(films[:1], np.zeros(1, int))  # the first call allocates
        start = time.perf_counter()
        runtime.explain(films[:n], np.zeros(n, int))
        rates[name] = round(n / (time.perf_counter() - start), 2)
    return rates


if __name__ == "__main__":
    main()
