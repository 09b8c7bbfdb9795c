"""Where prepare's films come from: one module per image source, each returning a :class:`SourceRecord`.

* ``nih`` (:mod:`~xray_spark.prepare.sources.nih`): a Data_Entry CSV and a folder of PNG files;
* ``dicom`` (:mod:`~xray_spark.prepare.sources.dicom.source`): a folder of DICOM files, read by
  their headers, with the patients pseudonymised (:mod:`xray_spark.privacy`).

A source reads and checks its inputs, writes the summary's ``metadata`` and ``images``
sections (:func:`~xray_spark.prepare.run.write_sections`), chooses the label set
(:mod:`~xray_spark.prepare.label_set`) and returns the candidates in the columns decode
takes. Decoding, quarantine, the store and the tables are the same for every source
(:mod:`xray_spark.prepare.pipeline`). A new source is one module here and one entry in :data:`SOURCES`.
"""

from __future__ import annotations

import importlib

from xray_spark.prepare.run import PrepareRun, SourceRecord

#: Each source's module, by the name ``--source`` takes; each has ``read(run) -> SourceRecord``.
SOURCES = {
    "nih": "xray_spark.prepare.sources.nih",
    "dicom": "xray_spark.prepare.sources.dicom.source",
}


def read_source(run: PrepareRun) -> SourceRecord:
    """The run's source read (``run.inputs.source``)."""
    return importlib.import_module(SOURCES[run.inputs.source]).read(run)
