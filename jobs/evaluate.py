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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _arg_parser().parse_args(argv)

    def body() -> int:
        settings = cli.resolve_settings(args, [f"evaluate.split={args.split}"] if args.split else [])
        spark, lake = cli.open_lake(settings, "evaluate")
        from xray_spark.evaluate.pipeline import run_evaluation
        from xray_spark.report import format_table

        summary = run_evaluation(spark, lake, settings, model_version=args.model_version, model_path=args.model)
        print(
            f"evaluate {summary['model_version']} on the {summary['split']} split: "
            f"{summary['images']:,} images of {summary['patients']:,} patients"
        )
        rows = [
            [
                m["finding"],
                m["positives"],
                m["auroc"],
                f"{m['auroc_low']:.3f}-{m['auroc_high']:.3f}",
                m["threshold"],
                m["sensitivity"],
                m["specificity"],
                m["true_prevalence"],
                m["predicted_prevalence"],
            ]
            for m in summary["metrics"]
        ]
        rows.append(["mean", "", summary["mean_auroc"], "", "", "", "", "", ""])
        print(
            format_table(
                [
                    "finding",
                    "positives",
                    "AUROC",
                    "95% CI",
                    "threshold",
                    "sensitivity",
                    "specificity",
                    "true prev.",
                    "pred. prev.",
                ],
                rows,
            )
        )
        print(f"report: {summary['report']}")
        cli.write_summary_json(args.summary_json, summary)
        return 0

    return cli.run_job("evaluate", body)


if __name__ == "__main__":
    sys.exit(main())
