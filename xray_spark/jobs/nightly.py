"""spark-submit jobs/nightly.py: tonight's studies ingested, scored and put on the worklist, in one Spark session.

spark-submit jobs/nightly.py --incoming DIR [--source nih|dicom] [--lake DIR] [--conf FILE] [--set k=v ...]
    [--summary-json PATH]

With ``--source nih`` (the default) DIR holds tonight's Data_Entry_2017.csv and images/;
with ``--source dicom`` DIR is tonight's folder of DICOM files (the pseudonym key as for
``prepare --source dicom``). The same three steps as ``prepare --incremental``,
``score --new-only`` and ``worklist``, with the same results, but the JVM, its first
queries and the Python workers start once instead of three times. Without the delivery
(a late one) it stops in one line (exit 2) before Spark starts, and nothing is ingested or scored.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from xray_spark import cli
from xray_spark.errors import UsageError

METADATA_NAME = "Data_Entry_2017.csv"


def _arg_parser() -> argparse.ArgumentParser:
    parser = cli.base_parser("nightly", "prepare --incremental, score --new-only and worklist in one Spark session.")
    parser.add_argument(
        "--incoming", required=True, help=f"tonight's delivery: {METADATA_NAME} and images/, or a folder of DICOM files"
    )
    parser.add_argument("--source", choices=("nih", "dicom"), default="nih", help="what the delivery is (default nih)")
    parser.add_argument("--limit", type=int, default=100, help="films on the worklist page (default 100)")
    return parser


def _tonights_inputs(incoming: str, source: str, settings):
    from xray_spark.prepare import PrepareInputs, check_inputs

    folder = Path(incoming)
    if source == "dicom":
        if not folder.is_dir():
            raise UsageError(f"{folder} is not a folder: nothing was ingested or scored")
        inputs = PrepareInputs(metadata=None, images=str(folder), incremental=True, source="dicom")
        check_inputs(inputs, settings)
        return inputs
    if not (folder / METADATA_NAME).is_file():
        raise UsageError(
            f"{folder / METADATA_NAME} has not arrived: nothing was ingested or scored "
            "(run again when it has, or pass --incoming DIR)"
        )
    if not (folder / "images").is_dir():
        raise UsageError(f"{folder / 'images'} is not a folder: nothing was ingested or scored")
    inputs = PrepareInputs(
        metadata=str(folder / METADATA_NAME), images=str(folder / "images"), incremental=True, source="nih"
    )
    check_inputs(inputs, settings)
    return inputs


def main(argv: list[str] | None = None) -> int:
    args = _arg_parser().parse_args(argv)

    def body() -> int:
        settings = cli.resolve_settings(args)
        if args.limit < 1:
            raise UsageError("--limit must be at least 1")
        inputs = _tonights_inputs(args.incoming, args.source, settings)
        started = time.monotonic()
        spark, lake = cli.open_lake(settings, "nightly")
        from xray_spark.prepare import run_prepare
        from xray_spark.prepare.summary import prepare_summary_text
        from xray_spark.score.pipeline import run_scoring
        from xray_spark.score.summary import score_summary_text
        from xray_spark.worklist.pipeline import run_worklist
        from xray_spark.worklist.summary import worklist_summary_text

        summary: dict = {"incoming": args.incoming}
        try:
            summary["prepare"] = run_prepare(spark, lake, settings, inputs)
            print(prepare_summary_text(summary["prepare"]), flush=True)
            summary["score"] = run_scoring(spark, lake, settings, new_only=True)
            print(score_summary_text(summary["score"], new_only=True), flush=True)
            summary["worklist"] = run_worklist(spark, lake, settings, limit=args.limit)
            print(worklist_summary_text(summary["worklist"]), flush=True)
        finally:  # what ran is on record however the night ends
            summary["seconds"] = round(time.monotonic() - started, 1)
            cli.write_summary_json(args.summary_json, summary, settings)
        return 0

    return cli.run_job("nightly", body, args)


if __name__ == "__main__":
    sys.exit(main())
