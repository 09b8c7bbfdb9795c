"""spark-submit jobs/prepare.py: an NIH-format archive or a DICOM export into a Petastorm training store.

The job lives in the package (``xray_spark/jobs/prepare.py``); ``xray-spark prepare`` runs the same job.
"""

import sys

from xray_spark.jobs.prepare import main

if __name__ == "__main__":
    sys.exit(main())
