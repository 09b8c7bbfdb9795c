"""xray-spark: chest X-ray archives scored with deep learning on Apache Spark."""

from __future__ import annotations

import os

# tf_keras (Keras 2) is the Keras that trains with MultiWorkerMirroredStrategy; set before
# TensorFlow is first imported, here and in every Spark worker that imports the package.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
