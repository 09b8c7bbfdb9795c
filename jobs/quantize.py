"""spark-submit jobs/quantize.py: an int8 copy of an ONNX model, registered as a new version for CPU scoring.

The job lives in the package (``xray_spark/jobs/quantize.py``); ``xray-spark quantize`` runs the same job.
"""

import sys

from xray_spark.jobs.quantize import main

if __name__ == "__main__":
    sys.exit(main())
