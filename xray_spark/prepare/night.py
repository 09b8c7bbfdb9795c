"""A night's inputs: tonight's NIH delivery, a folder of DICOM files, or what the DICOM node's spool holds new."""

from __future__ import annotations

from pathlib import Path

from xray_spark import spool
from xray_spark.config import Settings
from xray_spark.errors import UsageError
from xray_spark.lake import local_path
from xray_spark.prepare.pipeline import check_inputs
from xray_spark.prepare.run import PrepareInputs

METADATA_NAME = "Data_Entry_2017.csv"


def tonights_inputs(incoming: str, source: str, settings: Settings) -> PrepareInputs:
    """The night's prepare inputs (incremental), checked before Spark starts; a late delivery is one clear error."""
    folder = Path(incoming)
    if source == "dicom":
        if not folder.is_dir():
            raise UsageError(f"{folder} is not a folder: nothing was ingested or scored")
        files = None
        if spool.is_spool(str(folder)):  # the node's spool: what no night has ingested yet
            files = tuple(spool.open_spool(str(folder), local_path(settings.lake), create=False).pending())
        inputs = PrepareInputs(metadata=None, images=str(folder), incremental=True, source="dicom", files=files)
        check_inputs(inputs, settings)
        return inputs
    if not (folder / METADATA_NAME).is_file():
        raise UsageError(
            f"{folder / METADATA_NAME} has not arrived: nothing was ingested or scored "
            "(run again when it has, or pass --incoming DIR)"
        )
    if not (folder / "images").is_dir():
        raise UsageError(f"{folder / 'images'} is not a folder: nothing was ingested or scored")
    inputs = PrepareInputs(
        metadata=str(folder / METADATA_NAME), images=str(folder / "images"), incremental=True, source="nih"
    )
    check_inputs(inputs, settings)
    return inputs
