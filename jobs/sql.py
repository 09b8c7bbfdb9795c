"""spark-submit jobs/sql.py: run a SQL query against the lake's catalog.

The job lives in the package (``xray_spark/jobs/sql.py``); ``xray-spark sql`` runs the same job.
"""

import sys

from xray_spark.jobs.sql import main

if __name__ == "__main__":
    sys.exit(main())
