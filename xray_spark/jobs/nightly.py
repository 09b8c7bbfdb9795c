"""spark-submit jobs/nightly.py: tonight's studies ingested, scored and put on the worklist, in one Spark session.

spark-submit jobs/nightly.py --incoming DIR [--source nih|dicom] [--lake DIR] [--config FILE] [--set k=v ...]
    [--summary-json PATH]                   (or --source dicom [--images SPOOL]: the node's spool by default)

``--source nih``: DIR holds tonight's Data_Entry_2017.csv and images/; ``--source dicom``: DICOM files or the spool,
of which the night reads what no night has ingested, after pulling a DICOMweb archive's films into it (with
``dicomweb_source.url``). prepare --incremental, score --new-only, monitor, worklist and (``deliver.destinations``)
deliver; a night with nothing new still retries the recent deliveries. Exit status: 6, 4, 5 in that order.
"""

from __future__ import annotations

import argparse
import sys
import time

from xray_spark import cli
from xray_spark.deliver.summary import deliver_summary_text, exchange_status
from xray_spark.errors import UsageError
from xray_spark.node.priors import after_ingest, priors_into_spool
from xray_spark.node.pull import pull_into_spool
from xray_spark.prepare.sources import DEFAULT_SOURCE, SOURCES, source_help


def _arg_parser() -> argparse.ArgumentParser:
    parser = cli.base_parser("nightly", "prepare --incremental, score --new-only and worklist in one Spark session.")
    parser.add_argument("--incoming", help="tonight's delivery: Data_Entry_2017.csv and images/, or DICOM files")
    parser.add_argument("--images", help="--source dicom: DICOM files, or the node's spool (default dicom_node.spool)")
    parser.add_argument("--source", choices=tuple(SOURCES), default=DEFAULT_SOURCE, help=source_help())
    parser.add_argument("--limit", type=int, default=100, help="films on the worklist page (default 100)")
    return parser


def _deliver(spark, lake, settings) -> dict:
    from xray_spark.deliver.pipeline import run_delivery

    done = run_delivery(spark, lake, settings)
    print(deliver_summary_text(done), flush=True)
    return done


def _monitor(spark, lake, settings) -> dict:
    """Tonight against the reference (before the worklist, so its index shows tonight's charts)."""
    from xray_spark.monitor import run_monitor
    from xray_spark.monitor.summary import monitor_summary_text

    try:
        done = run_monitor(spark, lake, settings)
    except UsageError as exc:  # no champion yet: scoring used the newest model
        done = {"dataset": settings.dataset, "note": str(exc), "alerts": []}
    print(monitor_summary_text(done), flush=True)
    return done


def main(argv: list[str] | None = None) -> int:
    args = _arg_parser().parse_args(argv)

    def body() -> int:
        settings = cli.resolve_settings(args)
        if args.limit < 1:
            raise UsageError("--limit must be at least 1")
        self_describing = SOURCES[args.source].self_describing
        if not args.incoming and not args.images and self_describing:
            args.images = settings.dicom_node.spool
        if bool(args.incoming) == bool(args.images) or (args.images and not self_describing):
            raise UsageError("pass --incoming DIR, or --images DIR with --source dicom")
        from xray_spark.prepare.night import tonights_inputs

        # a DICOMweb archive's films for tonight, and the earlier films of patients new to the lake
        pulled = {**pull_into_spool(settings, args.images), **priors_into_spool(settings, args.images)}
        inputs = tonights_inputs(args.incoming or args.images, args.source, settings)
        delivers = SOURCES[args.source].identified and bool(settings.deliver.destinations)
        if inputs.files == ():
            cli.log.info("the spool holds nothing new since the last night: nothing to ingest or score")
            summary = {"incoming": inputs.images, **pulled, "spool": {"ingested": 0}}
            if delivers:  # the recent nights' films not yet delivered are still tried
                try:
                    summary["deliver"] = _deliver(*cli.open_lake(settings, "nightly"), settings)
                except UsageError as exc:  # no film, no champion yet: nothing a night could deliver
                    cli.log.info("nothing to deliver: %s", exc)
            cli.write_summary_json(args.summary_json, summary, settings)
            return exchange_status(summary)
        started = time.monotonic()
        spark, lake = cli.open_lake(settings, "nightly")
        from xray_spark.prepare import run_prepare
        from xray_spark.prepare.summary import prepare_summary_text
        from xray_spark.score.pipeline import run_scoring
        from xray_spark.score.summary import score_summary_text
        from xray_spark.worklist.pipeline import run_worklist
        from xray_spark.worklist.summary import worklist_summary_text

        summary: dict = {"incoming": args.incoming or args.images, **pulled}
        try:
            summary["prepare"] = run_prepare(spark, lake, settings, inputs)
            print(prepare_summary_text(summary["prepare"]), flush=True)
            summary["score"] = run_scoring(spark, lake, settings, new_only=True)
            print(score_summary_text(summary["score"], new_only=True), flush=True)
            if inputs.files:  # prepared and scored (a night that failed before leaves the spool as it was)
                summary["spool"] = after_ingest(spark, lake, settings, inputs.files, inputs.images)
            summary["monitor"] = _monitor(spark, lake, settings)
            summary["worklist"] = run_worklist(spark, lake, settings, limit=args.limit)
            print(worklist_summary_text(summary["worklist"]), flush=True)
            if delivers:  # the results back to the PACS
                summary["deliver"] = _deliver(spark, lake, settings)
        finally:  # what ran is on record however the night ends
            summary["seconds"] = round(time.monotonic() - started, 1)
            cli.write_summary_json(args.summary_json, summary, settings)
        if summary["score"]["not_scored"]["films"]:  # a broken model: before anything else
            return cli.EXIT_NOT_SCORED
        if exchange_status(summary):
            return cli.EXIT_UNDELIVERED
        return cli.EXIT_DRIFT if settings.monitor.fail_on_alert and summary["monitor"].get("alerts") else 0

    return cli.run_job("nightly", body, args)


if __name__ == "__main__":
    sys.exit(main())
