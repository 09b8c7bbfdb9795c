"""spark-submit jobs/prepare.py: an NIH-format archive or a DICOM export into a Petastorm training store.

spark-submit jobs/prepare.py [--source nih] --metadata CSV --images DIR [--bbox CSV]
    [--split-lists TRAIN_VAL_TXT TEST_TXT] [--lake DIR] [--config FILE] [--set k=v ...]
    [--incremental | --replace] [--require-images] [--metadata-only] [--summary-json PATH]
spark-submit jobs/prepare.py --source dicom --images DIR [--labels CSV] [--dataset NAME] [--incremental | --replace] ...
"""

from __future__ import annotations

import argparse
import sys

from xray_spark import cli
from xray_spark.prepare import PrepareInputs, check_inputs, run_prepare
from xray_spark.prepare.sources import DEFAULT_SOURCE, SOURCES, source_help


def _arg_parser() -> argparse.ArgumentParser:
    parser = cli.base_parser("prepare", "Ingest chest X-rays and their NIH-format metadata into a Petastorm store.")
    parser.add_argument(
        "--source",
        choices=tuple(SOURCES),
        default=DEFAULT_SOURCE,
        help=source_help(),
    )
    parser.add_argument("--metadata", help="Data_Entry CSV (2017 or v2020; .csv or .csv.gz); for --source nih")
    parser.add_argument(
        "--labels",
        help="for --source dicom: CSV of 'Finding Labels' by 'Accession Number' or 'SOP Instance UID'; "
        "labelled films get patient-level splits, the others stay unlabeled",
    )
    parser.add_argument("--images", help="folder holding the images (searched recursively)")
    parser.add_argument("--bbox", help="BBox_List CSV: boxes are loaded into xray.boxes")
    parser.add_argument(
        "--split-lists",
        nargs=2,
        metavar=("TRAIN_VAL_TXT", "TEST_TXT"),
        help="official NIH split lists; default: patient-hash split from the conf",
    )
    parser.add_argument("--dataset", help="store name under lake/petastorm (overrides the conf's 'dataset')")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--incremental", action="store_true", help="add only images not yet in the store")
    mode.add_argument(
        "--replace",
        action="store_true",
        help="let a full run remove studies from a non-empty store (without it such a run is refused)",
    )
    parser.add_argument(
        "--require-images",
        action="store_true",
        help="fail when a metadata row has no image file (default: report and go on)",
    )
    parser.add_argument(
        "--metadata-only",
        action="store_true",
        help="read and check the metadata only: counts and label set, no store written",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _arg_parser().parse_args(argv)

    def body() -> int:
        extra = [f"dataset={args.dataset}"] if args.dataset else []
        settings = cli.resolve_settings(args, extra)
        if args.images is None and not args.metadata_only:
            raise cli.UsageError("--images DIR is required (or pass --metadata-only to check the metadata alone)")
        inputs = PrepareInputs(
            metadata=args.metadata,
            images=args.images,
            bbox=args.bbox,
            split_lists=tuple(args.split_lists) if args.split_lists else None,
            incremental=args.incremental,
            require_images=args.require_images,
            metadata_only=args.metadata_only,
            replace=args.replace,
            source=args.source,
            labels=args.labels,
        )
        check_inputs(inputs, settings)  # before Spark starts
        spark, lake = cli.open_lake(settings, "prepare")
        try:
            summary = run_prepare(spark, lake, settings, inputs)
        except cli.QuarantineLimitExceeded as exc:
            cli.write_summary_json(args.summary_json, exc.summary, settings)
            raise
        from xray_spark.prepare.summary import prepare_summary_text

        print(prepare_summary_text(summary))
        cli.write_summary_json(args.summary_json, summary, settings)
        return 0

    return cli.run_job("prepare", body, args)


if __name__ == "__main__":
    sys.exit(main())
