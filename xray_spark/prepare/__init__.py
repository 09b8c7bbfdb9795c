"""The prepare job: an archive into the Petastorm training store, ``xray.studies`` and ``xray.quarantine``."""

from xray_spark.prepare.pipeline import check_inputs, run_prepare
from xray_spark.prepare.run import PrepareInputs

__all__ = ["PrepareInputs", "check_inputs", "run_prepare"]
