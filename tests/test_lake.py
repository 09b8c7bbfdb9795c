"""Lake folders on another volume: scored and appended to with one-rename commits."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from xray_spark.errors import UsageError
from xray_spark.prepare import PrepareInputs, run_prepare
from xray_spark.score.pipeline import run_scoring

from .lakes import copy_lake


def _other_volume(tmp_path: Path) -> Path:
    """A folder on another file system than ``tmp_path`` (/dev/shm, a tmpfs), or skip."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second file system to put a lake folder on")
    folder = shm / f"xray-test-{os.getpid()}-{tmp_path.name}"
    folder.mkdir()
    return folder


def test_lake_folders_on_another_volume_are_scored_and_appended_to(spark, prepared, small_model, archive, tmp_path):
    """tables/predictions and the store behind symlinks to another disk: the commits stay renames there."""
    settings, lake = copy_lake(prepared, tmp_path / "lake")
    other = _other_volume(tmp_path)
    try:
        (other / "predictions").mkdir()
        (Path(lake.root) / "tables" / "predictions").symlink_to(other / "predictions")
        shutil.move(str(Path(lake.root) / "petastorm" / "nih"), str(other / "nih"))
        (Path(lake.root) / "petastorm" / "nih").symlink_to(other / "nih")
        lines = (archive / "Data_Entry_2017.csv").read_text().splitlines()
        first, night = tmp_path / "first.csv", tmp_path / "night.csv"
        first.write_text("\n".join(lines[:101]) + "\n")
        night.write_text("\n".join([lines[0], *lines[101:]]) + "\n")
        with pytest.raises(UsageError, match=r"^store 'nih' lies on another volume .*run --incremental"):
            run_prepare(spark, lake, settings, PrepareInputs(str(first), str(archive / "images"), replace=True))
        summary = run_scoring(spark, lake, settings, model_version=small_model["version"], new_only=True)
        assert summary["written"] == 160 and any((other / "predictions").iterdir())
        grown = run_prepare(spark, lake, settings, PrepareInputs(str(night), str(archive / "images"), incremental=True))
        assert grown["store_rows"] == 160 and not (other / "nih" / "_staging").exists()
    finally:
        shutil.rmtree(other, ignore_errors=True)
