"""A full prepare never wipes a store by accident: --replace is explicit, journalled and undone or finished
after a kill; the views follow the store."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from xray_spark.dev.synthetic import METADATA_HEADER
from xray_spark.errors import UsageError
from xray_spark.lake import Lake, tables
from xray_spark.lake.store import read_manifest
from xray_spark.prepare import PrepareInputs, run_prepare
from xray_spark.score.pipeline import run_scoring

from .conftest import ROOT, make_settings
from .jobs import job_env
from .lakes import copy_lake, tree_digest


def test_a_full_prepare_that_would_remove_studies_is_refused(spark, prepared, archive, tmp_path):
    settings, lake = copy_lake(prepared, tmp_path / "lake")
    empty = tmp_path / "empty-images"
    empty.mkdir()
    header_only = tmp_path / "header-only.csv"
    header_only.write_text(",".join(METADATA_HEADER) + "\n")
    before = tree_digest(Path(lake.root) / "petastorm")
    for metadata, images in ((archive / "Data_Entry_2017.csv", empty), (header_only, archive / "images")):
        with pytest.raises(UsageError, match=r"would remove 160 of the 160 studies in store 'nih'.*--replace"):
            run_prepare(spark, lake, settings, PrepareInputs(str(metadata), str(images)))
    assert tree_digest(Path(lake.root) / "petastorm") == before, "the refused runs changed nothing"
    assert len(read_manifest(lake, "nih").runs) == 1


def test_replace_is_explicit_keeps_the_history_and_studies_equal_the_store(spark, prepared, archive, tmp_path):
    settings, lake = copy_lake(prepared, tmp_path / "lake")
    lines = (archive / "Data_Entry_2017.csv").read_text().splitlines()
    subset = tmp_path / "subset.csv"
    subset.write_text("\n".join(lines[:41]) + "\n")  # the header and 40 studies
    summary = run_prepare(spark, lake, settings, PrepareInputs(str(subset), str(archive / "images"), replace=True))
    assert summary["store_rows"] == 40
    store_ids = {r["image_id"] for r in spark.read.parquet(lake.store_url("nih")).select("image_id").collect()}
    tables.register_tables(spark, lake)
    studies = {r["image_id"] for r in spark.table("xray.studies").where(F.col("dataset") == "nih").collect()}
    assert studies == store_ids and len(store_ids) == 40
    runs = read_manifest(lake, "nih").runs
    assert [r.get("mode") for r in runs][-1] == "replace" and len(runs) == 2, "the first run stays in the history"


KILLED_REPLACE = """
import os, signal, sys
from xray_spark.lake import Lake
from xray_spark.prepare import PrepareInputs, load, run_prepare
from xray_spark.session import build_session
from tests.conftest import make_settings

lake_dir, metadata, images, moment = sys.argv[1:]
move = Lake.move

def killing_move(self, src, dst):
    move(self, src, dst)
    if (moment == "aside" and dst.endswith("-replaced")) or (moment == "moved-in" and "/_staging/" in src
            and dst.endswith("/petastorm/nih")):
        os.kill(os.getpid(), signal.SIGKILL)

Lake.move = killing_move
if moment == "manifest-written":
    load.finish_replace = lambda *_: os.kill(os.getpid(), signal.SIGKILL)
settings = make_settings(lake_dir, "spark.driver_memory=1g")
spark = build_session(settings.spark)
run_prepare(spark, Lake.at(lake_dir), settings, PrepareInputs(metadata, images, replace=True))
"""


def _killed_replace(lake: Lake, metadata: Path, images: Path, moment: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_REPLACE, lake.root, str(metadata), str(images), moment],
        cwd=ROOT,
        env=job_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, err = proc.communicate(timeout=300)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # its JVM, orphaned by the kill
    assert proc.returncode == -signal.SIGKILL, err[-3000:]


@pytest.mark.parametrize(
    ("moment", "after"),
    [("moved-in", 160), ("manifest-written", 40)],  # "aside" (no store at all) is undone the same way
)
def test_a_killed_replace_is_undone_or_finished_before_the_next_night(
    spark, prepared, archive, tmp_path, moment, after
):
    """Killed with the new store in place but no manifest (the old one aside), or just after the manifest:
    the next --incremental night first undoes the swap (the 160 studies are back) or finishes it (40)."""
    settings, lake = copy_lake(prepared, tmp_path / "lake")
    lines = (archive / "Data_Entry_2017.csv").read_text().splitlines()
    subset = tmp_path / "subset.csv"
    subset.write_text("\n".join(lines[:41]) + "\n")  # the header and 40 studies
    night = tmp_path / "night.csv"
    night.write_text("\n".join([lines[0], *lines[151:161]]) + "\n")  # 10 studies the first store holds
    _killed_replace(lake, subset, archive / "images", moment)
    summary = run_prepare(spark, lake, settings, PrepareInputs(str(night), str(archive / "images"), incremental=True))
    assert summary["recovered_replace"].startswith("undone" if after == 160 else "finished"), summary
    stored = spark.read.parquet(lake.store_url("nih")).select("image_id").distinct().count()
    expected = after if after == 160 else 50  # the finished replace's 40, then the night's 10
    assert stored == expected and summary["store_rows"] == expected, (moment, stored, summary["store_rows"])
    assert not (Path(lake.root) / "petastorm" / "_staging").exists() or not any(
        (Path(lake.root) / "petastorm" / "_staging").iterdir()
    ), "the swap's leftovers are gone"


def test_a_store_without_its_manifest_is_refused_not_taken_for_empty(spark, prepared, archive, tmp_path):
    settings, lake = copy_lake(prepared, tmp_path / "lake")
    (Path(lake.root) / "petastorm" / "nih" / "_xray_store.json").unlink()
    with pytest.raises(UsageError, match=r"holds Parquet files but no manifest .* not treated as empty"):
        run_prepare(
            spark,
            lake,
            settings,
            PrepareInputs(str(archive / "Data_Entry_2017.csv"), str(archive / "images"), incremental=True),
        )


def test_a_replace_that_drops_studies_drops_them_from_the_views_and_the_worklist(
    spark, prepared, small_model, archive, tmp_path
):
    from xray_spark.worklist.pipeline import run_worklist

    settings, lake = copy_lake(prepared, tmp_path / "lake")
    run_scoring(spark, lake, settings, model_version=small_model["version"], new_only=True)
    lines = (archive / "Data_Entry_2017.csv").read_text().splitlines()
    subset = tmp_path / "subset.csv"
    subset.write_text("\n".join(lines[:41]) + "\n")  # 40 of the 160 studies stay
    run_prepare(spark, lake, settings, PrepareInputs(str(subset), str(archive / "images"), replace=True))
    tables.register_tables(spark, lake)
    kept = {line.split(",")[0] for line in lines[1:41]}
    for view in ("latest_predictions", "worklist", "progression"):
        shown = {r["image_id"] for r in spark.table(f"xray.{view}").select("image_id").distinct().collect()}
        assert shown and shown <= kept, f"xray.{view} shows {len(shown - kept)} films no longer in the store"
    assert spark.table("xray.predictions").count() == 160, "the history of predictions stays"
    summary = run_worklist(spark, lake, settings)
    assert summary["films"] == 40 and summary["films_scored_that_date"] == 40


def test_new_only_scoring_is_per_dataset_when_image_ids_repeat(spark, prepared, small_model, archive, tmp_path):
    """Dataset site2 holds films whose file names are those of dataset nih: it is scored all the same."""
    settings, lake = copy_lake(prepared, tmp_path / "lake")
    run_scoring(spark, lake, settings, model_version=small_model["version"], new_only=True)
    lines = (archive / "Data_Entry_2017.csv").read_text().splitlines()
    subset = tmp_path / "site2.csv"
    subset.write_text("\n".join(lines[:41]) + "\n")
    site2 = make_settings(Path(lake.root), "dataset=site2")
    run_prepare(spark, lake, site2, PrepareInputs(str(subset), str(archive / "images")))
    summary = run_scoring(spark, lake, site2, model_version=small_model["version"], new_only=True)
    assert summary["written"] == 40 and summary["already_scored"] == 0, summary
    again = run_scoring(spark, lake, site2, model_version=small_model["version"], new_only=True)
    assert again["written"] == 0 and again["already_scored"] == 40


def test_studies_partition_is_removed_when_a_dataset_ends_empty(spark, tmp_path):
    from xray_spark.prepare.load import write_dataset_partition

    lake = Lake.at(str(tmp_path))
    rows = spark.createDataFrame([("a", "d1"), ("b", "d2")], "image_id string, dataset string")
    write_dataset_partition(spark, rows, lake, "studies", "d1")
    write_dataset_partition(spark, rows.where("dataset = 'd1' AND false"), lake, "studies", "d1")
    left = spark.read.parquet(lake.table_url("studies")).collect()
    assert [(r["image_id"], r["dataset"]) for r in left] == [("b", "d2")]
