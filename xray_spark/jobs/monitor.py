"""spark-submit jobs/monitor.py: each night's inputs and the champion's outputs against a reference window.

spark-submit jobs/monitor.py [--dataset D] [--from DATE] [--to DATE] [--lake DIR] [--summary-json PATH]

No ground truth is needed: the DICOM metadata and picture statistics of each night's films,
and the champion's calibrated probabilities and call rates on them, against
``monitor.reference`` (the champion's first N nights, or its validation films); each night's
alerts by Holm's procedure at ``monitor.alpha`` (see :mod:`xray_spark.monitor.pipeline`).
Without dates, the nights not yet monitored; with them, the nights scored in that range
(again). Rows go to ``xray.monitoring``; what moved, to stderr; the summary (JSON), to stdout.
With ``monitor.fail_on_alert`` a night that raised an alert exits 5.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys

from xray_spark import cli
from xray_spark.errors import UsageError


def _date(text: str) -> str:
    try:
        return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _arg_parser() -> argparse.ArgumentParser:
    parser = cli.base_parser("monitor", "Each night's inputs and the champion's outputs against a reference.")
    parser.add_argument("--dataset", help="the dataset whose nights to monitor (default: the conf's 'dataset')")
    parser.add_argument("--from", dest="start", type=_date, help="first score date to test (YYYY-MM-DD)")
    parser.add_argument("--to", dest="end", type=_date, help="last score date to test (YYYY-MM-DD)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _arg_parser().parse_args(argv)

    def body() -> int:
        if args.start and args.end and args.start > args.end:
            raise UsageError(f"--from {args.start} is after --to {args.end}")
        settings = cli.resolve_settings(args, [f"dataset={args.dataset}"] if args.dataset else [])
        spark, lake = cli.open_lake(settings, "monitor")
        from xray_spark.monitor import run_monitor
        from xray_spark.monitor.summary import monitor_summary_text

        summary = run_monitor(spark, lake, settings, start=args.start, end=args.end)
        cli.log.info("%s", monitor_summary_text(summary))
        print(json.dumps(summary, sort_keys=True, default=str))
        cli.write_summary_json(args.summary_json, summary, settings)
        return cli.EXIT_DRIFT if settings.monitor.fail_on_alert and summary["alerts"] else 0

    return cli.run_job("monitor", body, args)


if __name__ == "__main__":
    sys.exit(main())
