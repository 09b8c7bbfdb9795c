"""spark-submit jobs/evaluate.py: AUROC per finding, ROC curves and operating points of a model.

spark-submit jobs/evaluate.py [--lake DIR] [--model-version V | --model PATH] [--split test]
    [--dataset D | --all-datasets] [--config FILE] [--set k=v ...] [--summary-json PATH]
"""

from __future__ import annotations

import argparse
import sys

from xray_spark import cli


def _arg_parser() -> argparse.ArgumentParser:
    parser = cli.base_parser("evaluate", "Evaluate a model's predictions against the labels of a split.")
    cli.add_model_choice(parser)
    parser.add_argument("--split", help="evaluate.split: test (default), val or train")
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--dataset", help="the dataset whose films are evaluated (default: the one the model trained on)"
    )
    which.add_argument(
        "--all-datasets", action="store_true", help="each dataset the model scored, each its own report and rows"
    )
    parser.add_argument(
        "--localization", action="store_true", help="also compare the model's heatmaps with xray.boxes (pointing game)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _arg_parser().parse_args(argv)

    def body() -> int:
        settings = cli.resolve_settings(args, [f"evaluate.split={args.split}"] if args.split else [])
        spark, lake = cli.open_lake(settings, "evaluate")
        from xray_spark.evaluate.pipeline import run_evaluation, scored_datasets
        from xray_spark.evaluate.summary import evaluation_summary_text
        from xray_spark.registry import resolve_model

        model = {"model_version": args.model_version, "model_path": args.model}
        datasets: list[str | None] = [args.dataset]
        if args.all_datasets:
            datasets = list(scored_datasets(spark, lake, resolve_model(spark, lake, version=args.model_version,
                                                                       path=args.model).version))  # fmt: skip
        summaries = []
        for dataset in datasets:
            summary = run_evaluation(spark, lake, settings, **model, localization=args.localization, dataset=dataset)
            print(evaluation_summary_text(summary), flush=True)
            summaries.append(summary)
        out = summaries[0] if not args.all_datasets else {"evaluations": summaries}
        cli.write_summary_json(args.summary_json, out, settings)
        return 0

    return cli.run_job("evaluate", body, args)


if __name__ == "__main__":
    sys.exit(main())
