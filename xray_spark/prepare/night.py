"""A night's inputs: what its source makes of tonight's folder (a delivery, DICOM files, the DICOM node's spool)."""

from __future__ import annotations

from pathlib import Path

from xray_spark.config import Settings
from xray_spark.prepare.pipeline import check_inputs
from xray_spark.prepare.run import PrepareInputs
from xray_spark.prepare.sources import source_named


def tonights_inputs(incoming: str, source: str, settings: Settings) -> PrepareInputs:
    """The night's prepare inputs (incremental), checked before Spark starts; a late delivery is one clear error."""
    inputs = source_named(source).load().tonight(Path(incoming), settings)
    check_inputs(inputs, settings)
    return inputs
