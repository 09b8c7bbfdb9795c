"""What may be kept from a DICOM header is :data:`privacy.KEPT`, enforced where headers are read; the pseudonym
key's early check is the run's own check."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from xray_spark import privacy
from xray_spark.dev.dicom_films import film
from xray_spark.errors import UsageError
from xray_spark.lake import Lake
from xray_spark.prepare.sources.dicom import headers
from xray_spark.prepare.sources.dicom.headers import HEADER_SCHEMA, header_row

from .conftest import ROOT, make_settings
from .corpus import DICOM_KEY, PHI
from .jobs import job_env

KEY = DICOM_KEY.encode()


def _identified_film():
    ds = film(np.full((40, 32), 90, np.uint8), bits_stored=8, PatientID="ZZPID0001", ViewPosition="PA", **PHI)
    ds.StudyDate = "20260101"
    return ds


class Spy:
    """A dataset that records every keyword read from it."""

    def __init__(self, ds):
        self._ds, self.read = ds, set()

    def get(self, keyword, default=None):
        self.read.add(keyword)
        return self._ds.get(keyword, default)

    def __contains__(self, keyword):
        self.read.add(keyword)
        return keyword in self._ds

    def __getattr__(self, keyword):
        if keyword != "file_meta":
            self.read.add(keyword)
        return getattr(self._ds, keyword)


def test_a_header_is_read_only_for_the_kept_attributes_and_those_derived_from():
    spy = Spy(_identified_film())
    row = header_row(spy, KEY)
    assert spy.read <= set(privacy.KEPT) | set(privacy.DERIVED_FROM), spy.read - set(privacy.KEPT)
    assert {"SOPInstanceUID", "PatientID", "ViewPosition"} <= spy.read  # it did read the header
    assert row["patient_pseudonym"] == privacy.pseudonym(KEY, "ZZPID0001") and row["age"] == 84
    assert set(row) | {"source_path", "read_path", "kind", "reason", "detail"} == set(HEADER_SCHEMA.fieldNames())
    assert not [v for v in map(str, row.values()) if "ZZ" in v or "19410203" in v], row


def test_a_kept_header_refuses_every_attribute_outside_the_list():
    kept = privacy.KeptHeader(_identified_film())
    assert kept.get("ViewPosition") == "PA" and "Rows" in kept and kept.Columns == 32
    for keyword in [*PHI, "PatientID", "PatientAge"]:
        with pytest.raises(KeyError, match=r"not in privacy\.KEPT"):
            kept.get(keyword)
        with pytest.raises(KeyError):
            keyword in kept  # noqa: B015
    assert not set(privacy.KEPT) & set(privacy.DERIVED_FROM)
    assert headers.kept_row(kept)["view"] == "PA"


def test_a_key_file_inside_the_lake_is_refused_before_spark_starts(tmp_path):
    """The job's early check is the run's (privacy.key_for_lake): a key file inside the lake fails it, with no
    Spark session started and nothing written."""
    lake = tmp_path / "lake"
    lake.mkdir()
    key = lake / "pseudonym.key"
    key.write_text(KEY.decode())
    key.chmod(0o600)
    export = tmp_path / "export"
    export.mkdir()
    settings = make_settings(lake, f"privacy.key_file={key}")
    with pytest.raises(UsageError, match="inside the lake"):
        privacy.key_for_lake(settings.privacy, Lake.at(str(lake)))
    args = ["--source", "dicom", "--images", str(export), "--lake", str(lake)]
    args += ["--set", f"privacy.key_file={key}", "--set", "privacy.key_env="]
    result = subprocess.run(
        [sys.executable, str(ROOT / "jobs" / "prepare.py"), *args],
        env=job_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "inside the lake" in result.stderr, result.stderr[-2000:]
    assert "SparkContext" not in result.stderr and sorted(p.name for p in lake.iterdir()) == ["pseudonym.key"]
