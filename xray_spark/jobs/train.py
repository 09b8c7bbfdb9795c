"""spark-submit jobs/train.py: a multi-label CNN trained from the Petastorm store.

spark-submit jobs/train.py [--lake DIR] [--dataset NAME] [--model small_cnn|densenet121|mobilenet_v2]
    [--epochs N] [--batch-size B] [--num-workers N] [--init-weights none|imagenet|PATH]
    [--config FILE] [--set k=v ...] [--resume] [--summary-json PATH]
"""

from __future__ import annotations

import argparse
import json
import sys

from xray_spark import cli
from xray_spark.models import MODELS


def _arg_parser() -> argparse.ArgumentParser:
    parser = cli.base_parser("train", "Train the finding classifier from the Petastorm store.")
    parser.add_argument("--dataset", help="store name under lake/petastorm (default: the conf's 'dataset')")
    parser.add_argument("--model", choices=MODELS, help="train.model")
    parser.add_argument("--epochs", type=int, help="train.epochs")
    parser.add_argument("--batch-size", type=int, help="train.batch_size (per worker)")
    parser.add_argument("--num-workers", type=int, help="train.num_workers: >1 runs a Spark barrier stage")
    parser.add_argument("--init-weights", help="train.init_weights: none, imagenet, champion or a weights file")
    parser.add_argument(
        "--verdicts", action="store_true", help="train.verdicts: readers' verdicts (xray.verdicts) label films too"
    )
    parser.add_argument("--resume", action="store_true", help="continue the newest unfinished run of this model")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _arg_parser().parse_args(argv)

    def body() -> int:
        extra = [f"dataset={args.dataset}"] if args.dataset else []
        for option, key in (
            ("model", "model"),
            ("epochs", "epochs"),
            ("batch_size", "batch_size"),
            ("num_workers", "num_workers"),
            ("init_weights", "init_weights"),
        ):
            value = getattr(args, option)
            if value is not None:
                extra.append(f"train.{key}={json.dumps(value)}")
        extra += ["train.verdicts=true"] if args.verdicts else []
        settings = cli.resolve_settings(args, extra)
        spark, lake = cli.open_lake(settings, "train")
        from xray_spark.train.pipeline import run_training

        summary = run_training(spark, lake, settings, resume=args.resume)
        print(
            f"\nmodel {summary['version']} ({summary['model']}, best epoch {summary['best_epoch']} "
            f"of {summary['epochs_run']}, {summary['num_workers']} worker(s), {summary['seconds']:.0f} s)"
        )
        from xray_spark.train.summary import auroc_table_text

        print(auroc_table_text(summary["val_auroc"], summary["operating_points"]))
        print(f"saved in {summary['model_dir']}")
        cli.write_summary_json(args.summary_json, summary, settings)
        return 0

    return cli.run_job("train", body, args)


if __name__ == "__main__":
    sys.exit(main())
