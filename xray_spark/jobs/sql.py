"""spark-submit jobs/sql.py: run a SQL query against the lake's catalog.

spark-submit jobs/sql.py [--lake DIR] "SELECT ..." [--format table|csv|json] [--limit N]
"""

from __future__ import annotations

import argparse
import sys

from xray_spark import cli
from xray_spark.sql_client import add_query_arguments


def _arg_parser() -> argparse.ArgumentParser:
    return add_query_arguments(cli.base_parser("sql", "Query xray.* tables and views with Spark SQL."))


def main(argv: list[str] | None = None) -> int:
    args = _arg_parser().parse_args(argv)

    def body() -> int:
        settings = cli.resolve_settings(args)
        spark, _ = cli.open_lake(settings, "sql", catalog=True)
        from xray_spark.readonly import query_text

        print(query_text(spark, args.query, fmt=args.format, limit=args.limit))
        return 0

    return cli.run_job("sql", body, args)


if __name__ == "__main__":
    sys.exit(main())
