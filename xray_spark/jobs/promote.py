"""spark-submit jobs/promote.py: give a model version an alias (``champion`` by default).

spark-submit jobs/promote.py --model-version V [--alias champion] [--reason TEXT] [--lake DIR]
spark-submit jobs/promote.py --if-passed CHALLENGE_ID [--reason TEXT] [--lake DIR]

Scoring and evaluation use the champion unless told otherwise, and the views
(``xray.latest_predictions``, ``xray.worklist``, ``xray.progression``) show its predictions:
training a model changes nothing until someone promotes it. Each promotion is a row of
``xray.model_aliases`` (alias, version, when, the OS user, the reason); the newest row of an
alias holds it, so promoting an older version again is the rollback. Prints the row (JSON).
With ``--if-passed`` the challenger of that challenge (``jobs/challenge.py``) is promoted only
when the challenge passed and the champion it challenged still holds the alias; the reason
recorded starts with the challenge's id. Without it the reason says that no challenge was run.
"""

from __future__ import annotations

import argparse
import json
import sys

from xray_spark import cli


def _arg_parser() -> argparse.ArgumentParser:
    parser = cli.base_parser("promote", "Give a registered model version an alias (default: champion).")
    parser.add_argument("--model-version", help="a version from xray.models (with --if-passed: the challenger)")
    parser.add_argument("--if-passed", metavar="CHALLENGE_ID", help="promote only if this challenge passed")
    parser.add_argument("--alias", default="champion", help="the alias to give it (default: champion)")
    parser.add_argument("--reason", default="", help="why, in a few words (kept in xray.model_aliases)")
    return parser


def _checked(spark, lake, args: argparse.Namespace, before: dict | None) -> tuple[str, str]:
    """The version to promote and the reason to record: on a passed challenge, or saying none was run."""
    from xray_spark.errors import UsageError
    from xray_spark.registry import challenge_outcome

    if not args.if_passed:
        if not args.model_version:
            raise UsageError("promote needs --model-version V, or --if-passed CHALLENGE_ID")
        return args.model_version, "no challenge was run" + (f": {args.reason}" if args.reason else "")
    outcome = challenge_outcome(spark, lake, args.if_passed)
    challenger = outcome["challenger"]
    if not outcome["passed"]:
        failed = "; ".join(f"{r['rule']}: {r['detail']}" for r in outcome["rules"] if not r["passed"])
        how = "was inconclusive" if outcome["outcome"] == "INCONCLUSIVE" else "failed"
        raise UsageError(f"challenge {args.if_passed} {how} ({failed}): {challenger} is not promoted")
    if args.model_version and args.model_version != challenger:
        raise UsageError(f"challenge {args.if_passed} tested {challenger}, not {args.model_version}")
    if before is not None and before["version"] != outcome["champion"]:
        raise UsageError(
            f"challenge {args.if_passed} was against {outcome['champion']}, but {before['version']} holds "
            f"{args.alias} now: challenge it again"
        )
    return challenger, f"challenge {args.if_passed} passed" + (f": {args.reason}" if args.reason else "")


def main(argv: list[str] | None = None) -> int:
    args = _arg_parser().parse_args(argv)

    def body() -> int:
        settings = cli.resolve_settings(args)
        spark, lake = cli.open_lake(settings, "promote")
        from xray_spark.registry import alias_holder, set_alias

        before = alias_holder(spark, lake, args.alias)
        version, reason = _checked(spark, lake, args, before)
        row = set_alias(spark, lake, version, alias=args.alias, reason=reason)
        cli.log.info("%s: %s -> %s", args.alias, before["version"] if before else "(none)", row["version"])
        print(json.dumps(row, sort_keys=True))
        cli.write_summary_json(args.summary_json, {**row, "previous": before["version"] if before else None}, settings)
        return 0

    return cli.run_job("promote", body, args)


if __name__ == "__main__":
    sys.exit(main())
