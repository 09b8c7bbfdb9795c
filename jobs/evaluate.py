"""spark-submit jobs/evaluate.py: AUROC per finding, ROC curves and operating points of a model.

The job lives in the package (``xray_spark/jobs/evaluate.py``); ``xray-spark evaluate`` runs the same job.
"""

import sys

from xray_spark.jobs.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
