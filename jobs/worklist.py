"""spark-submit jobs/worklist.py: a scoring date's worklist as a static page a radiologist can read.

The job lives in the package (``xray_spark/jobs/worklist.py``); ``xray-spark worklist`` runs the same job.
"""

import sys

from xray_spark.jobs.worklist import main

if __name__ == "__main__":
    sys.exit(main())
