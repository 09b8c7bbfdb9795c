"""spark-submit jobs/monitor.py: each night's inputs and the champion's outputs against a reference window.

The job lives in the package (``xray_spark/jobs/monitor.py``); ``xray-spark monitor`` runs the same job.
"""

import sys

from xray_spark.jobs.monitor import main

if __name__ == "__main__":
    sys.exit(main())
