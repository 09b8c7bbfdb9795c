"""spark-submit jobs/quantize.py: an int8 copy of an ONNX model, registered as a new version for CPU scoring.

spark-submit jobs/quantize.py --model-version V [--method static|dynamic] [--calibration-films 200]
                              [--version NEW] [--lake DIR] [--config FILE] [--set k=v ...]

Static quantization (the default) measures activation ranges on up to ``--calibration-films``
films of the validation split of the store the model was trained on (``--dataset`` or the
card's), dynamic needs none (:mod:`xray_spark.onnx.quantize`). The copy is registered as ``V-int8``
(or ``--version``) with its parent named in its card; it replaces its parent only through the
challenge (``xray-spark challenge --challenger V-int8``) and a promotion. Prints the new
version, its size and its parent's (JSON).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile

from xray_spark import cli
from xray_spark.errors import UsageError


def _arg_parser() -> argparse.ArgumentParser:
    parser = cli.base_parser("quantize", "Write an int8 copy of an ONNX model as a new model version.")
    parser.add_argument("--model-version", required=True, help="an ONNX model version from xray.models")
    parser.add_argument("--method", default="static", help="static (calibrated on validation films) or dynamic")
    parser.add_argument("--calibration-films", type=int, default=200, help="validation films static calibration reads")
    parser.add_argument("--version", help="the copy's version (default: V-int8, V-int8-dynamic for dynamic)")
    return parser


def validation_films(spark, lake, dataset: str, n: int):
    """Up to ``n`` films of the store's validation split, as scoring reads them: (n, size, size, 1) uint8."""
    import cv2
    import numpy as np
    from pyspark.sql import functions as F

    from xray_spark.errors import UsageError

    store = spark.read.parquet(lake.store_url(dataset)).where(F.col("split") == "val").select("image_id", "image")
    rows = store.orderBy("image_id").limit(n).collect()
    if not rows:
        raise UsageError(f"store {dataset!r} has no validation films to calibrate on: use --method dynamic")
    return np.stack([cv2.imdecode(np.frombuffer(r["image"], np.uint8), 0)[..., None] for r in rows])


def main(argv: list[str] | None = None) -> int:
    args = _arg_parser().parse_args(argv)

    def body() -> int:
        from xray_spark.onnx.quantize import METHODS, quantized_folder

        if args.method not in METHODS:
            raise UsageError(f"--method {args.method!r}: one of {', '.join(METHODS)}")
        settings = cli.resolve_settings(args)
        spark, lake = cli.open_lake(settings, "quantize")
        from xray_spark.registry import register_model, resolve_model

        parent = resolve_model(spark, lake, version=args.model_version)
        dataset = parent.dataset or settings.dataset
        films = validation_films(spark, lake, dataset, args.calibration_films) if args.method == "static" else None
        version = args.version or f"{parent.version}-int8" + ("-dynamic" if args.method == "dynamic" else "")
        with tempfile.TemporaryDirectory(prefix="quantized-") as scratch:
            folder = quantized_folder(parent, scratch, version, args.method, films)
            row = register_model(spark, lake, folder, dataset=dataset)
        with open(f"{row['path']}/model.json", encoding="utf-8") as fh:
            how = json.load(fh)["quantization"]
        done = {"version": row["version"], "parent": parent.version, "path": row["path"], **how}
        print(json.dumps(done, sort_keys=True))
        cli.write_summary_json(args.summary_json, done, settings)
        return 0

    return cli.run_job("quantize", body, args)


if __name__ == "__main__":
    sys.exit(main())
