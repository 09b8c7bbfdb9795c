"""spark-submit jobs/train.py: a multi-label CNN trained from the Petastorm store.

The job lives in the package (``xray_spark/jobs/train.py``); ``xray-spark train`` runs the same job.
"""

import sys

from xray_spark.jobs.train import main

if __name__ == "__main__":
    sys.exit(main())
