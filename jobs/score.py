"""spark-submit jobs/score.py: per-image finding probabilities for the archive.

The job lives in the package (``xray_spark/jobs/score.py``); ``xray-spark score`` runs the same job.
"""

import sys

from xray_spark.jobs.score import main

if __name__ == "__main__":
    sys.exit(main())
