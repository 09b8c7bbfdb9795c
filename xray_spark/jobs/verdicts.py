"""spark-submit jobs/verdicts.py: readers' verdicts from the web app's SQLite file as ``xray.verdicts``.

spark-submit jobs/verdicts.py [--lake DIR] [--verdicts FILE]

One row per submission (each time a reader saved a film's form): dataset, image_id, reader,
submission_id, submitted_at, model_version, the findings the model called, those the reader
confirmed, rejected and marked missed, no_finding, ``complete`` (every call confirmed or
rejected, or no finding) and ``current`` (the reader's newest on that film). Free-text notes
stay in the SQLite file: they never reach the table or training. The table is rewritten whole
each run (the file holds the whole history). Prints a summary (JSON), with each reader's
agreement with the reference (the labels CSV, the other readers, the model's calls) and a
warning for a reader flagged as far from everyone else, before any training uses their verdicts.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys

from xray_spark import cli
from xray_spark.lake import catalog

SCHEMA = catalog.schema("verdicts")


def _arg_parser() -> argparse.ArgumentParser:
    parser = cli.base_parser("verdicts", "Publish readers' verdicts from the web app as xray.verdicts.")
    parser.add_argument("--verdicts", help="the web app's verdicts file (web.verdicts; default <lake>/verdicts/)")
    return parser


def rows(submissions: list[dict]) -> list[tuple]:
    from xray_spark.web.verdicts import CONFIRM, MISSED, REJECT, Verdict

    out = []
    for s in submissions:
        marked = s["findings"]
        kinds = [sorted(f for f, v in marked.items() if v == kind) for kind in (CONFIRM, REJECT, MISSED)]
        verdict = Verdict(
            s["dataset"], s["image_id"], s["reader"], s["model_version"], tuple(s["called"]), marked, s["no_finding"]
        )
        when = dt.datetime.fromtimestamp(s["at"], dt.UTC).replace(tzinfo=None)
        head = (s["dataset"], s["image_id"], s["reader"], s["id"], when, s["model_version"], s["called"])
        out.append((*head, *kinds, s["no_finding"], verdict.complete(), s["current"]))
    return out


def _agreement(spark, lake, table: list[tuple]) -> dict[str, list[dict]]:
    """Per dataset, each reader's agreement with the others (:func:`~.verdict_labels.reader_agreement` of train)."""
    from xray_spark.labels import FINDINGS
    from xray_spark.train.verdict_labels import reader_agreement
    from xray_spark.train.verdicts import csv_findings

    names = SCHEMA.fieldNames()
    out = {}
    for dataset in sorted({r[0] for r in table}):
        mine = [dict(zip(names, r, strict=True)) for r in table if r[0] == dataset]
        out[dataset] = reader_agreement(mine, FINDINGS, csv_findings(spark, lake, dataset))
    return out


def main(argv: list[str] | None = None) -> int:
    args = _arg_parser().parse_args(argv)

    def body() -> int:
        extra = [f"web.verdicts={json.dumps(args.verdicts)}"] if args.verdicts else []
        settings = cli.resolve_settings(args, extra)
        from xray_spark.web.serve import verdicts_path
        from xray_spark.web.verdicts import VerdictStore

        path = verdicts_path(settings)
        submissions = VerdictStore(path).submissions()
        spark, lake = cli.open_lake(settings, "verdicts")
        from xray_spark.lake import tables

        table = rows(submissions)
        tables.write_table(spark.createDataFrame(table, SCHEMA), lake, "verdicts", mode="overwrite")
        current = [r for r in table if r[-1]]
        summary = {
            "verdicts_file": path,
            "submissions": len(table),
            "films": len({(r[0], r[1]) for r in current}),
            "readers": len({r[2] for r in table}),
            "complete_current": sum(r[-2] for r in current),
            "agreement": _agreement(spark, lake, table),
        }
        cli.log.info("xray.verdicts: %s", summary)
        for dataset, readers in summary["agreement"].items():
            for r in readers:
                if r["flagged"]:
                    cli.log.warning(
                        "reader %s is far from everyone else on %s: kappa %.2f with the labels CSV, the other readers "
                        "and the model over %d films (%g positives per film); train --verdicts refuses their verdicts "
                        "until train.verdicts_flagged says otherwise",
                        r["reader"], dataset, r["kappa"], r["films"], r["positives_per_film"],
                    )  # fmt: skip
        print(json.dumps(summary, sort_keys=True))
        cli.write_summary_json(args.summary_json, summary, settings)
        return 0

    return cli.run_job("verdicts", body, args)


if __name__ == "__main__":
    sys.exit(main())
