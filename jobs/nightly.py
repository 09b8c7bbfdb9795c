"""spark-submit jobs/nightly.py: tonight's studies ingested, scored and put on the worklist, in one Spark session.

The job lives in the package (``xray_spark/jobs/nightly.py``); ``xray-spark nightly`` runs the same job.
"""

import sys

from xray_spark.jobs.nightly import main

if __name__ == "__main__":
    sys.exit(main())
