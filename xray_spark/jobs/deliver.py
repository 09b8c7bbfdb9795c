"""spark-submit jobs/deliver.py: the champion's results sent back into each DICOM film's study in the PACS.

spark-submit jobs/deliver.py [--lake DIR] [--dataset D] [--to AE_TITLE@HOST:PORT ...] [--to-folder DIR ...]
    [--secondary-capture] [--config FILE] [--set k=v ...] [--summary-json PATH]

Per film scored by the champion and not yet sent to a destination: a DICOM Comprehensive SR
(TID 1500) in the film's own study, and with ``--secondary-capture`` a picture with the
heatmap burnt in. The patient and study are copied from the film's source file, found
through the film map outside the lake: this job is where identity is re-joined, so run it
as the account that may read the spool or export (docs/deliver.md). ``--to`` and
``--to-folder`` replace ``deliver.destinations``. A rerun sends nothing already sent and
retries what failed.
"""

from __future__ import annotations

import argparse
import sys

from xray_spark import cli


def _arg_parser() -> argparse.ArgumentParser:
    parser = cli.base_parser("deliver", "Send the champion's results (DICOM SR, optional SC) back to the PACS.")
    parser.add_argument("--dataset", help="the DICOM dataset (default: the conf's 'dataset')")
    parser.add_argument("--to", action="append", metavar="AE_TITLE@HOST:PORT", help="a DICOM node (repeatable)")
    parser.add_argument("--to-folder", action="append", metavar="DIR", help="a folder outside the lake (repeatable)")
    parser.add_argument("--secondary-capture", action="store_true", help="also the heatmap picture (deliver.*)")
    parser.add_argument(
        "--retry-given-up", action="store_true", help="try again the films given up (their source files are back)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _arg_parser().parse_args(argv)

    def body() -> int:
        extra = [f"dataset={args.dataset}"] if args.dataset else []
        settings = cli.resolve_settings(args, extra)
        named = [*(args.to or []), *(f"folder:{d}" for d in args.to_folder or [])]
        spark, lake = cli.open_lake(settings, "deliver")
        from xray_spark.deliver.pipeline import run_delivery
        from xray_spark.deliver.summary import deliver_summary_text

        summary = run_delivery(
            spark,
            lake,
            settings,
            destinations=named or None,
            secondary_capture=True if args.secondary_capture else None,
            retry_given_up=args.retry_given_up,
        )
        print(deliver_summary_text(summary))
        cli.write_summary_json(args.summary_json, summary, settings)
        return cli.EXIT_UNDELIVERED if summary.get("failed") else 0

    return cli.run_job("deliver", body, args)


if __name__ == "__main__":
    sys.exit(main())
