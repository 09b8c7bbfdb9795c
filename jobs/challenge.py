"""spark-submit jobs/challenge.py: a challenger against the champion on the same labelled patients, PASS or FAIL.

The job lives in the package (``xray_spark/jobs/challenge.py``); ``xray-spark challenge`` runs the same job.
"""

import sys

from xray_spark.jobs.challenge import main

if __name__ == "__main__":
    sys.exit(main())
