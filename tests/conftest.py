"""Shared fixtures: one SparkSession for the whole run, small archives in temp folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from xray_spark.config import load_settings
from xray_spark.dev.synthetic import write_archive
from xray_spark.lake import Lake
from xray_spark.prepare import PrepareInputs, run_prepare

ROOT = Path(__file__).resolve().parents[1]
NIH_SAMPLE = Path(os.environ.get("XRAY_SPARK_NIH_SAMPLE", ROOT.parent / "shared" / "data" / "nih-sample"))

#: The modules that take minutes, longest first: collected first, so that parallel workers (``make test`` runs
#: ``pytest -n``, one module per worker at a time) start the longest work first and finish together.
LONGEST_FIRST = (
    "test_train",
    "test_cluster",
    "test_monitor",
    "test_jobs",
    "test_dicom_node",
    "test_deliver",
    "test_dicom_demo",
    "test_locks",
    "test_store_replace",
    "test_cli",
    "test_sql_server",
    "test_readonly",
    "test_dicom_source",
    "test_prepare",
    "test_score",
    "test_web",
)


def pytest_collection_modifyitems(config, items):
    """Modules of :data:`LONGEST_FIRST` first, in that order; each module's tests keep their own order."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.module.__name__.rpartition(".")[2], len(rank)))


#: Small settings for fast tests: 64 px images, a few files per store.
TEST_OVERRIDES = ["image.size=64", "prepare.images_per_file=40", "spark.shuffle_partitions=4", "score.heatmaps=none"]


@pytest.fixture(scope="session")
def spark():
    from xray_spark.session import build_session

    settings = load_settings(
        None,
        [
            "spark.master=local[2]",
            "spark.driver_memory=2g",
            "spark.shuffle_partitions=4",
            "spark.conf={spark.ui.enabled: 'false', spark.ui.showConsoleProgress: 'false'}",
        ],
    )
    session = build_session(settings.spark, app_name="xray-spark tests")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def archive(tmp_path_factory) -> Path:
    """A synthetic NIH-layout archive: 160 images at 96 px."""
    out = tmp_path_factory.mktemp("archive")
    write_archive(out, n_images=160, size=96, seed=11)
    return out


def make_settings(lake_dir: Path, *extra: str):
    """The test settings for a lake at ``lake_dir``; DICOM identity maps go beside it, outside it."""
    identity = Path(lake_dir).parent / f"{Path(lake_dir).name}-identity"
    return load_settings(
        ROOT / "conf" / "local.yaml", [*TEST_OVERRIDES, f"lake={lake_dir}", f"privacy.identity_dir={identity}", *extra]
    )


@pytest.fixture(scope="session")
def prepared(spark, archive, tmp_path_factory):
    """The archive prepared into a lake: (settings, lake, summary)."""
    lake_dir = tmp_path_factory.mktemp("lake")
    settings = make_settings(lake_dir)
    lake = Lake.at(settings.lake)
    inputs = PrepareInputs(
        metadata=str(archive / "Data_Entry_2017.csv"),
        images=str(archive / "images"),
        bbox=str(archive / "BBox_List_2017.csv"),
    )
    summary = run_prepare(spark, lake, settings, inputs)
    return settings, lake, summary


@pytest.fixture(scope="session")
def nih_sample() -> Path:
    """The real NIH metadata and 150 real images; skipped when absent, except under CI."""
    if not (NIH_SAMPLE / "Data_Entry_2017_v2020.csv.gz").exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"the NIH sample is missing at {NIH_SAMPLE} and CI=true: real-data tests must run in CI")
        pytest.skip("the NIH sample (../shared/data/nih-sample) is not present")
    return NIH_SAMPLE


@pytest.fixture(scope="session")
def small_model(spark, prepared):
    """A quickly trained small_cnn on the prepared store (quality is not the point here).

    Six epochs (a few seconds more than two): a two-epoch model of one CI run gave its riskiest films
    near-constant scores with no spatial evidence, every heatmap blank. Two epochs of this store are
    8 steps, after which the BatchNormalization statistics used for scoring (momentum 0.9) are only
    57% of the way from their start; 24 steps take them 92% of the way.
    """
    from xray_spark.train.pipeline import run_training

    _, lake, _ = prepared
    quick = make_settings(Path(lake.root), "train.epochs=6", "train.eval_max_rows=50")
    return run_training(spark, lake, quick)
