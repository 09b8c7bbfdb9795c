"""spark-submit jobs/score.py: per-image finding probabilities for the archive.

spark-submit jobs/score.py [--lake DIR] [--model-version V | --model PATH]
    [--new-only] [--batch-size B] [--config FILE] [--set k=v ...] [--summary-json PATH]
"""

from __future__ import annotations

import argparse
import sys

from xray_spark import cli


def _arg_parser() -> argparse.ArgumentParser:
    parser = cli.base_parser("score", "Score the store's studies with a trained model into xray.predictions.")
    cli.add_model_choice(parser)
    parser.add_argument("--dataset", help="store name under lake/petastorm (default: the conf's 'dataset')")
    parser.add_argument("--new-only", action="store_true", help="score only studies this model has not scored")
    parser.add_argument("--batch-size", type=int, help="score.batch_size: images per model call")
    parser.add_argument("--heatmaps", help="score.heatmaps: none, called or top:N (default top:100)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _arg_parser().parse_args(argv)

    def body() -> int:
        extra = [f"dataset={args.dataset}"] if args.dataset else []
        if args.batch_size is not None:
            extra.append(f"score.batch_size={args.batch_size}")
        if args.heatmaps is not None:
            extra.append(f"score.heatmaps={args.heatmaps}")
        settings = cli.resolve_settings(args, extra)
        spark, lake = cli.open_lake(settings, "score")
        from xray_spark.score.pipeline import run_scoring

        summary = run_scoring(
            spark, lake, settings, model_version=args.model_version, model_path=args.model, new_only=args.new_only
        )
        from xray_spark.score.summary import score_summary_text

        print(score_summary_text(summary, new_only=args.new_only))
        cli.write_summary_json(args.summary_json, summary, settings)
        return cli.EXIT_NOT_SCORED if summary["not_scored"]["films"] else 0

    return cli.run_job("score", body, args)


if __name__ == "__main__":
    sys.exit(main())
