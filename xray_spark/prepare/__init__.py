"""The prepare job: an archive into the Petastorm training store, ``xray.studies`` and ``xray.quarantine``."""

from xray_spark.prepare.pipeline import PrepareInputs, check_inputs, run_prepare

__all__ = ["PrepareInputs", "check_inputs", "run_prepare"]
