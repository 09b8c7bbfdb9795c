"""spark-submit jobs/register_model.py: admit a model folder trained elsewhere into the lake.

spark-submit jobs/register_model.py --model DIR [--lake DIR] [--config FILE] [--set k=v ...]
spark-submit jobs/register_model.py --model FILE.onnx --card CARD.yaml [...]

The folder needs a model.json (version, model_file, labels, input.size) and a native
``.keras`` model file, or an ONNX file and the ``onnx`` section of its card (with ``--card``
the folder is made from the file and the card: :func:`xray_spark.onnx.runtime.model_folder`).
The file is checked and opened once (Keras in safe mode: a Lambda layer, an ``.h5`` file or a
SavedModel is refused; ONNX with standard operators only), its shapes are checked against model.json, the
folder is copied to ``lake/models/<version>`` and ``xray.models`` records it with the
SHA-256 of both files: scoring and evaluation then accept it, and refuse it if either file
changes afterwards.
"""

from __future__ import annotations

import argparse
import json
import sys

from xray_spark import cli
from xray_spark.errors import UsageError


def _arg_parser() -> argparse.ArgumentParser:
    parser = cli.base_parser("register_model", "Register a model trained elsewhere in xray.models.")
    parser.add_argument("--model", required=True, help="the model folder (model.json + a .keras file), or an .onnx")
    parser.add_argument("--card", help="with an .onnx file: its card (YAML: version, onnx: input, outputs, findings)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _arg_parser().parse_args(argv)

    def body() -> int:
        import tempfile

        from xray_spark.onnx.runtime import ONNX_SUFFIX, model_folder

        if args.model.lower().endswith(ONNX_SUFFIX) != bool(args.card):
            raise UsageError("an .onnx file is registered with its card (--card CARD.yaml), and only an .onnx file")
        settings = cli.resolve_settings(args)
        spark, lake = cli.open_lake(settings, "register_model")
        from xray_spark.registry import register_model

        with tempfile.TemporaryDirectory(prefix="onnx-model-") as scratch:  # the folder made from file and card
            folder = model_folder(args.model, args.card, scratch) if args.card else args.model
            row = register_model(spark, lake, folder, dataset=settings.dataset)
        print(json.dumps({k: row[k] for k in ("version", "path", "model_sha256", "meta_sha256")}, sort_keys=True))
        cli.write_summary_json(args.summary_json, row, settings)
        return 0

    return cli.run_job("register_model", body, args)


if __name__ == "__main__":
    sys.exit(main())
