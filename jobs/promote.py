"""spark-submit jobs/promote.py: give a model version an alias (``champion`` by default).

The job lives in the package (``xray_spark/jobs/promote.py``); ``xray-spark promote`` runs the same job.
"""

import sys

from xray_spark.jobs.promote import main

if __name__ == "__main__":
    sys.exit(main())
