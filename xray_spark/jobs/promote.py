"""spark-submit jobs/promote.py: give a model version an alias (``champion`` by default).

spark-submit jobs/promote.py --model-version V [--alias champion] [--reason TEXT] [--lake DIR]

Scoring and evaluation use the champion unless told otherwise, and the views
(``xray.latest_predictions``, ``xray.worklist``, ``xray.progression``) show its predictions:
training a model changes nothing until someone promotes it. Each promotion is a row of
``xray.model_aliases`` (alias, version, when, the OS user, the reason); the newest row of an
alias holds it, so promoting an older version again is the rollback. Prints the row (JSON).
"""

from __future__ import annotations

import argparse
import json
import sys

from xray_spark import cli


def _arg_parser() -> argparse.ArgumentParser:
    parser = cli.base_parser("promote", "Give a registered model version an alias (default: champion).")
    parser.add_argument("--model-version", required=True, help="a version from xray.models")
    parser.add_argument("--alias", default="champion", help="the alias to give it (default: champion)")
    parser.add_argument("--reason", default="", help="why, in a few words (kept in xray.model_aliases)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _arg_parser().parse_args(argv)

    def body() -> int:
        settings = cli.resolve_settings(args)
        spark, lake = cli.open_lake(settings, "promote")
        from xray_spark.registry import alias_holder, set_alias

        before = alias_holder(spark, lake, args.alias)
        row = set_alias(spark, lake, args.model_version, alias=args.alias, reason=args.reason)
        cli.log.info("%s: %s -> %s", args.alias, before["version"] if before else "(none)", row["version"])
        print(json.dumps(row, sort_keys=True))
        cli.write_summary_json(args.summary_json, {**row, "previous": before["version"] if before else None}, settings)
        return 0

    return cli.run_job("promote", body, args)


if __name__ == "__main__":
    sys.exit(main())
