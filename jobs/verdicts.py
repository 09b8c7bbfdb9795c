"""spark-submit jobs/verdicts.py: readers' verdicts from the web app as ``xray.verdicts``.

The job lives in the package (``xray_spark/jobs/verdicts.py``); ``xray-spark verdicts`` runs the same job.
"""

import sys

from xray_spark.jobs.verdicts import main

if __name__ == "__main__":
    sys.exit(main())
