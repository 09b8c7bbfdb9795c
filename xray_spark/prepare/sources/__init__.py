"""Where prepare's films come from: every image source named once, in :data:`SOURCES`.

* ``nih`` (:mod:`~xray_spark.prepare.sources.nih`): a Data_Entry CSV and a folder of PNG files;
* ``dicom`` (:mod:`~xray_spark.prepare.sources.dicom.source`): a folder of DICOM files, read by
  their headers, with the patients pseudonymised (:mod:`xray_spark.privacy`); the DICOM
  node's spool is such a folder.

A source's module has ``read(run) -> SourceRecord``: it reads and checks its inputs,
writes the summary's ``metadata`` and ``images`` sections
(:func:`~xray_spark.prepare.run.write_sections`), chooses the label set
(:mod:`~xray_spark.prepare.label_set`) and returns the candidates in the columns decode
takes; and ``tonight(folder, settings) -> PrepareInputs``, a night's inputs from its
folder. What prepare checks before Spark starts follows from the entry's two facts
(:attr:`ImageSource.self_describing`, :attr:`ImageSource.identified`).
Decoding, quarantine, the store and the tables are the same for every source
(:mod:`xray_spark.prepare.pipeline`); the jobs' ``--source`` choices, prepare's checks
and the nightly flow all ask :data:`SOURCES`. A new file-based source is one module here
and one entry there. Anything that *receives* films over the network (a DICOM node, a
DICOMweb pull) is not a source: it writes into the spool (:class:`xray_spark.spool.Spool`),
which the ``dicom`` source reads.
"""

from __future__ import annotations

import dataclasses
import importlib
from types import ModuleType

from xray_spark.errors import UsageError
from xray_spark.prepare.run import PrepareRun, SourceRecord


@dataclasses.dataclass(frozen=True)
class ImageSource:
    """An image source: its ``--source`` name, its module, what ``--images`` holds for it, and two facts
    prepare and the nightly flow act on."""

    name: str
    module: str
    help: str
    #: Its files describe themselves (DICOM headers): no metadata CSV, labels from ``--labels``.
    self_describing: bool
    #: Its films carry patient identity: pseudonymised at ingest, and results can be delivered back.
    identified: bool

    def load(self) -> ModuleType:
        return importlib.import_module(self.module)


#: Every image source, by the name ``--source`` takes.
SOURCES: dict[str, ImageSource] = {
    source.name: source
    for source in (
        ImageSource(
            "nih",
            "xray_spark.prepare.sources.nih",
            "a Data_Entry CSV (--metadata) and its images",
            self_describing=False,
            identified=False,
        ),
        ImageSource(
            "dicom",
            "xray_spark.prepare.sources.dicom.source",
            "the DICOM files under --images (or the DICOM node's spool), metadata from their headers "
            "(needs the pseudonym key: privacy.key_env / privacy.key_file)",
            self_describing=True,
            identified=True,
        ),
    )
}
#: The source ``--source`` means when it is not given.
DEFAULT_SOURCE = "nih"


def source_named(name: str) -> ImageSource:
    if name not in SOURCES:
        raise UsageError(f"--source must be {' or '.join(SOURCES)}, got {name!r}")
    return SOURCES[name]


def source_help() -> str:
    """``--source``'s help: each source and what it reads."""
    return "; ".join(f"{s.name}{' (default)' if s.name == DEFAULT_SOURCE else ''}: {s.help}" for s in SOURCES.values())


def read_source(run: PrepareRun) -> SourceRecord:
    """The run's source read (``run.inputs.source``)."""
    return source_named(run.inputs.source).load().read(run)
