"""spark-submit jobs/challenge.py: a challenger against the champion on the same labelled patients, PASS, FAIL or
INCONCLUSIVE.

spark-submit jobs/challenge.py --challenger V [--champion V] [--dataset D] [--lake DIR]

Both models are measured on the ``promotion.split`` films of the dataset (a model that has not
scored the dataset scores it first, without heatmaps): per finding both AUROCs, DeLong's paired
difference with its interval and p-value, a patient bootstrap interval, each model's
sensitivity and specificity at its own operating point; then the promotion rule of the conf
(``promotion.*``, written down before the test) says PASS or FAIL with the numbers, or INCONCLUSIVE
when a power calculation made before the test says the films are too few to show non-inferiority
at the margin (with the films needed). A model trained on patients of those films is refused. The
result goes to ``xray.challenges`` and a page beside the evaluation report; the summary
(JSON) goes to stdout. ``promote --if-passed CHALLENGE_ID`` promotes only a PASS.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from xray_spark import cli


def _arg_parser() -> argparse.ArgumentParser:
    parser = cli.base_parser("challenge", "A challenger against the champion on the same patients, by the rule.")
    parser.add_argument("--challenger", required=True, help="a version from xray.models")
    parser.add_argument("--champion", help="another version to challenge (default: the champion)")
    parser.add_argument("--dataset", help="the labelled dataset (default: the conf's 'dataset')")
    return parser


def _scored(spark, lake, settings, version: str) -> None:
    """Score the dataset with ``version`` unless it has already."""
    from pyspark.sql import functions as F

    from xray_spark.lake import tables
    from xray_spark.score.pipeline import run_scoring

    predictions = tables.read_table(spark, lake, "predictions")
    if predictions is not None:
        mine = predictions.where((F.col("dataset") == settings.dataset) & (F.col("model_version") == version))
        if not mine.isEmpty():
            return
    cli.log.info("%s has not scored %s yet: scoring it (no heatmaps)", version, settings.dataset)
    quiet = dataclasses.replace(settings, score=dataclasses.replace(settings.score, heatmaps="none"))
    run_scoring(spark, lake, quiet, model_version=version)


def main(argv: list[str] | None = None) -> int:
    args = _arg_parser().parse_args(argv)

    def body() -> int:
        settings = cli.resolve_settings(args, [f"dataset={args.dataset}"] if args.dataset else [])
        spark, lake = cli.open_lake(settings, "challenge")
        from xray_spark.challenge.pipeline import run_challenge
        from xray_spark.registry import alias_holder

        champion = args.champion or (alias_holder(spark, lake) or {}).get("version")
        for version in {v for v in (champion, args.challenger) if v}:
            _scored(spark, lake, settings, version)
        summary = run_challenge(spark, lake, settings, challenger=args.challenger, champion=champion)
        for rule in summary["rule"]:
            said = ("ok" if rule["passed"] else "SHORT") if rule.get("informational") else None
            said = said or ("PASS" if rule["passed"] else "FAIL")
            cli.log.info("%-16s %-5s  %s", rule["rule"], said, rule["detail"])
        cli.log.info("challenge %s: %s (page %s)", summary["challenge_id"], summary["outcome"], summary["page"])
        print(json.dumps(summary, sort_keys=True, default=str))
        cli.write_summary_json(args.summary_json, summary, settings)
        return 0

    return cli.run_job("challenge", body, args)


if __name__ == "__main__":
    sys.exit(main())
