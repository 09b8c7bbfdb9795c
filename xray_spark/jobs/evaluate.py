"""spark-submit jobs/evaluate.py: AUROC per finding, ROC curves and operating points of a model.

spark-submit jobs/evaluate.py [--lake DIR] [--model-version V | --model PATH] [--split test]
    [--conf FILE] [--set k=v ...] [--summary-json PATH]
"""

from __future__ import annotations

import argparse
import sys

from xray_spark import cli


def _arg_parser() -> argparse.ArgumentParser:
    parser = cli.base_parser("evaluate", "Evaluate a model's predictions against the labels of a split.")
    cli.add_model_choice(parser)
    parser.add_argument("--split", help="evaluate.split: test (default), val or train")
    parser.add_argument(
        "--localization", action="store_true", help="also compare the model's heatmaps with xray.boxes (pointing game)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _arg_parser().parse_args(argv)

    def body() -> int:
        settings = cli.resolve_settings(args, [f"evaluate.split={args.split}"] if args.split else [])
        spark, lake = cli.open_lake(settings, "evaluate")
        from xray_spark.evaluate.pipeline import run_evaluation
        from xray_spark.evaluate.summary import evaluation_summary_text

        summary = run_evaluation(
            spark,
            lake,
            settings,
            model_version=args.model_version,
            model_path=args.model,
            localization=args.localization,
        )
        print(evaluation_summary_text(summary))
        cli.write_summary_json(args.summary_json, summary, settings)
        return 0

    return cli.run_job("evaluate", body, args)


if __name__ == "__main__":
    sys.exit(main())
