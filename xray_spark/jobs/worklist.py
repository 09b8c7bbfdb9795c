"""spark-submit jobs/worklist.py: a scoring date's worklist as a static page a radiologist can read.

spark-submit jobs/worklist.py [--lake DIR] [--dataset NAME] [--date YYYY-MM-DD] [--limit N]
    [--config FILE] [--set k=v ...] [--summary-json PATH]
"""

from __future__ import annotations

import argparse
import sys

from xray_spark import cli
from xray_spark.errors import UsageError


def _arg_parser() -> argparse.ArgumentParser:
    parser = cli.base_parser(
        "worklist", "Write the worklist pages (HTML) of a scoring date under lake/reports/worklist."
    )
    parser.add_argument("--dataset", help="store name (default: the conf's 'dataset')")
    parser.add_argument("--date", help="scoring date YYYY-MM-DD (default: the newest)")
    parser.add_argument("--limit", type=int, default=100, help="films on the page, riskiest first (default 100)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _arg_parser().parse_args(argv)

    def body() -> int:
        settings = cli.resolve_settings(args, [f"dataset={args.dataset}"] if args.dataset else [])
        if args.limit < 1:
            raise UsageError("--limit must be at least 1")
        spark, lake = cli.open_lake(settings, "worklist")
        from xray_spark.worklist.pipeline import run_worklist

        summary = run_worklist(spark, lake, settings, score_date=args.date, limit=args.limit)
        from xray_spark.worklist.summary import worklist_summary_text

        print(worklist_summary_text(summary))
        cli.write_summary_json(args.summary_json, summary, settings)
        return 0

    return cli.run_job("worklist", body, args)


if __name__ == "__main__":
    sys.exit(main())
