"""spark-submit jobs/register_model.py: admit a model folder trained elsewhere into the lake.

The job lives in the package (``xray_spark/jobs/register_model.py``); ``xray-spark register_model`` runs the same job.
"""

import sys

from xray_spark.jobs.register_model import main

if __name__ == "__main__":
    sys.exit(main())
