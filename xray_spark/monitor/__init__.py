"""Nightly monitoring: did a night's films, or the champion's outputs on them, move from the reference?"""

from xray_spark.monitor.pipeline import run_monitor

__all__ = ["run_monitor"]
