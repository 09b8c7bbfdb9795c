"""xray-spark: chest X-ray archives scored with deep learning on Apache Spark."""

from __future__ import annotations

__version__ = "0.1.0"
