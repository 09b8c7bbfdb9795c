"""spark-submit jobs/deliver.py: the champion's results sent back into each DICOM film's study.

The job lives in the package (``xray_spark/jobs/deliver.py``); ``xray-spark deliver`` runs the same job.
"""

import sys

from xray_spark.jobs.deliver import main

if __name__ == "__main__":
    sys.exit(main())
