"""Shared fixtures: one SparkSession for the whole run, small archives in temp folders."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from xray_spark.config import load_settings
from xray_spark.dev.synthetic import write_archive
from xray_spark.lake import Lake
from xray_spark.prepare import PrepareInputs, run_prepare

ROOT = Path(__file__).resolve().parents[1]
NIH_SAMPLE = Path(os.environ.get("XRAY_SPARK_NIH_SAMPLE", ROOT.parent / "shared" / "data" / "nih-sample"))

#: The modules that take minutes, longest first: collected first, so that parallel workers (``make test`` runs
#: ``pytest -n --dist loadfile --no-loadscope-reorder``, which keeps this order) start the longest work first and
#: finish together.
LONGEST_FIRST = (
    "test_train",  # builds the learning set (tests/learning.py) that the two other test_train_* modules copy
    "test_cluster",
    "test_jobs",
    "test_train_challenge",
    "test_train_verdicts",
    "test_deliver",
    "test_week",
    "test_dicom_node",
    "test_monitor",
    "test_prepare",
    "test_sql_server",
    "test_store_replace",
    "test_dicom_demo",
    "test_dicom_source",
    "test_dicomweb_pull",
    "test_score",
    "test_locks",
    "test_cli",
    "test_bad_input",
    "test_train_workers",
    "test_web",
    "test_nih_sample",
    "test_readonly",
)


def pytest_collection_modifyitems(config, items):
    """Modules of :data:`LONGEST_FIRST` first, in that order; each module's tests keep their own order."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.module.__name__.rpartition(".")[2], len(rank)))


#: The tests' settings: 64 px images, a few files per store, and no display pictures (a Spark write per prepare,
#: 7% of a small one) except where they are tested (the prepared lake, its web app and worklists: :data:`DISPLAY`).
TEST_OVERRIDES = [
    "image.size=64",
    "prepare.images_per_file=40",
    "spark.shuffle_partitions=4",
    "score.heatmaps=none",
    "web.display_max_side=0",
]
DISPLAY = "web.display_max_side=1024"


@pytest.fixture(scope="session", autouse=True)
def product_home(tmp_path_factory) -> Path:
    """The product's home (its default lake, spool, identity map, services' state folders) in this run's temp
    folder, for every test and every process a test starts: nothing a test does lands in the user's own home."""
    from xray_spark.config import places

    home = tmp_path_factory.mktemp("xray-home")
    previous = os.environ.get(places.HOME_ENV)
    os.environ[places.HOME_ENV] = str(home)
    yield home
    if previous is None:
        os.environ.pop(places.HOME_ENV, None)
    else:
        os.environ[places.HOME_ENV] = previous


@pytest.fixture(scope="session", autouse=True)
def class_archive(tmp_path_factory) -> Path | None:
    """The driver class archive (:mod:`xray_spark.class_archive`) in the product's cache, as a user's jobs have it:
    written by the first worker of the first run on this machine before its session starts (about 40 s, once),
    then mapped by every JVM the tests start (a job's start costs a third less CPU). A worker that finds another
    writing it goes on without waiting. The archive's path (it may not be there yet, or at all on a read-only
    cache), or None without Java."""
    from xray_spark.class_archive import archive_key, cache_dir
    from xray_spark.session import DRIVER_JVM_OPTIONS, java_executable

    java = java_executable()
    if java is None:
        return None
    archive = cache_dir() / f"spark-{archive_key(java, DRIVER_JVM_OPTIONS)}.jsa"
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "built-once"
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "class-archive.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return archive  # another worker writes it
        if not archive.exists() and not (root / "class-archive.tried").exists():
            subprocess.run(
                [sys.executable, "-m", "xray_spark.launch", "--class-archive"], capture_output=True, timeout=600
            )
            (root / "class-archive.tried").write_text("tried\n")
    return archive


@pytest.fixture(scope="session")
def spark(class_archive):
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
    # Its Python workers score models all run long: they fork with TensorFlow already imported (test_worker_daemon).
    session = build_session(settings.spark, app_name="xray-spark tests", worker_modules=("tensorflow",))
    yield session
    session.stop()


@contextlib.contextmanager
def _once_per_run(tmp_path_factory, name: str):
    """``(folder, build)``: ``folder`` is where the run's one copy of ``name`` lives; ``build`` is True for the one
    process that must build it there. Parallel workers (pytest-xdist) share the run's temp root and take turns on a
    lock, so what every worker would build the same (an archive, a prepared store, a trained model) is built once."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder = root / "built-once" / name
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            done = folder / ".built"
            yield folder, not done.exists()
            if not done.exists():
                done.write_text("built\n")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def archive(tmp_path_factory) -> Path:
    """A synthetic NIH-layout archive: 160 images at 96 px (one for the whole run: tests do not change it)."""
    with _once_per_run(tmp_path_factory, "archive") as (out, build):
        if build:
            shutil.rmtree(out, ignore_errors=True)
            write_archive(out, n_images=160, size=96, seed=11)
    return out


def make_settings(lake_dir: Path, *extra: str):
    """The test settings for a lake at ``lake_dir``; DICOM identity maps go beside it, outside it."""
    identity = Path(lake_dir).parent / f"{Path(lake_dir).name}-identity"
    return load_settings(
        ROOT / "conf" / "local.yaml", [*TEST_OVERRIDES, f"lake={lake_dir}", f"privacy.identity_dir={identity}", *extra]
    )


def shifted_model(model_dir: str, out: Path, suffix: str, logits: float = 3.0) -> tuple[str, str]:
    """A copy of the model at ``model_dir`` whose calibration adds ``logits`` to every finding's logit (it calls
    more): (its folder, its version, the original's with ``-suffix``)."""
    shutil.copytree(model_dir, out)
    meta = json.loads((out / "model.json").read_text())
    meta["version"] += f"-{suffix}"
    meta["calibration"] = {k: v and v | {"b": v["b"] + logits} for k, v in meta["calibration"].items()}
    (out / "model.json").write_text(json.dumps(meta))
    return str(out), meta["version"]


def _plain(value):
    """A summary's numpy numbers and dates as JSON takes them."""
    return value.item() if hasattr(value, "item") else str(value)


@pytest.fixture(scope="session")
def prepared(spark, archive, tmp_path_factory):
    """The archive prepared into a lake of this process's own: (settings, lake, summary).

    Prepared once per run (:func:`_once_per_run`); each process gets a copy, which its tests may write to."""
    with _once_per_run(tmp_path_factory, "prepared") as (golden, build):
        if build:
            shutil.rmtree(golden, ignore_errors=True)
            settings = make_settings(golden / "lake", DISPLAY)
            inputs = PrepareInputs(
                metadata=str(archive / "Data_Entry_2017.csv"),
                images=str(archive / "images"),
                bbox=str(archive / "BBox_List_2017.csv"),
            )
            summary = run_prepare(spark, Lake.at(settings.lake), settings, inputs)
            (golden / "summary.json").write_text(json.dumps(summary, default=_plain))
    lake_dir = tmp_path_factory.mktemp("lake")
    shutil.copytree(golden / "lake", lake_dir, dirs_exist_ok=True)
    text = (golden / "summary.json").read_text().replace(str(golden / "lake"), str(lake_dir))
    return make_settings(lake_dir, DISPLAY), Lake.at(str(lake_dir)), json.loads(text)


@pytest.fixture(scope="session")
def nih_sample() -> Path:
    """The real NIH metadata and 150 real images; skipped when absent, except under CI."""
    if not (NIH_SAMPLE / "Data_Entry_2017_v2020.csv.gz").exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"the NIH sample is missing at {NIH_SAMPLE} and CI=true: real-data tests must run in CI")
        pytest.skip("the NIH sample (../shared/data/nih-sample) is not present")
    return NIH_SAMPLE


@pytest.fixture(scope="session")
def small_model(spark, prepared, tmp_path_factory):
    """A quickly trained small_cnn on the prepared store (quality is not the point here), registered in this
    process's prepared lake: {model_dir, version, labels}.

    Trained once per run, in a copy of the prepared lake (:func:`_once_per_run`), and registered from there.
    Six epochs (a few seconds more than two): a two-epoch model of one CI run gave its riskiest films
    near-constant scores with no spatial evidence, every heatmap blank. Two epochs of this store are
    8 steps, after which the BatchNormalization statistics used for scoring (momentum 0.9) are only
    57% of the way from their start; 24 steps take them 92% of the way.
    """
    from xray_spark.registry import register_model

    settings, lake, _ = prepared
    with _once_per_run(tmp_path_factory, "small_model") as (golden, build):
        if build:
            from xray_spark.train.pipeline import run_training

            shutil.rmtree(golden, ignore_errors=True)
            shutil.copytree(lake.root, golden / "lake")
            quick = make_settings(golden / "lake", "train.epochs=6", "train.eval_max_rows=50")
            trained = run_training(spark, Lake.at(str(golden / "lake")), quick)
            (golden / "model.json").write_text(json.dumps({"model_dir": trained["model_dir"]}))
    row = register_model(
        spark, lake, json.loads((golden / "model.json").read_text())["model_dir"], dataset=settings.dataset
    )
    return {"model_dir": lake.path("models", row["version"]), "version": row["version"], "labels": list(row["labels"])}


@pytest.fixture(scope="session")
def learning_archive(tmp_path_factory) -> Path:
    """The learning set's archive (tests/learning.py): 800 films with planted findings, one for the run (read only)."""
    with _once_per_run(tmp_path_factory, "learning-archive") as (out, build):
        if build:
            from .learning import write_learning_archive

            shutil.rmtree(out, ignore_errors=True)
            write_learning_archive(out)
    return out


@pytest.fixture(scope="session")
def _learned(spark, learning_archive, tmp_path_factory) -> Path:
    """The run's one learning lake: the learning archive prepared and small_cnn trained on it for 30 epochs, built
    by the first process that asks, in the run's shared folder."""
    with _once_per_run(tmp_path_factory, "learned") as (golden, build):
        if build:
            from .learning import train_learned

            shutil.rmtree(golden, ignore_errors=True)
            summary = train_learned(spark, learning_archive, golden / "lake")
            (golden / "summary.json").write_text(json.dumps(summary, default=_plain))
    return golden


@pytest.fixture(scope="module")
def trained(spark, _learned, tmp_path_factory):
    """The learning set's lake and trained model, a copy of the test module's own: (settings, lake, summary).

    Each module writes to its copy as it likes (scores, fine-tunes, aliases). The copy's model is recorded in its
    own ``xray.models``, so a fine-tune from it starts from the copy's files."""
    from xray_spark.model_card import read_card
    from xray_spark.registry import record_model

    from .learning import BUDGET, STORE

    lake_dir = tmp_path_factory.mktemp("learnlake")
    shutil.copytree(_learned / "lake", lake_dir, dirs_exist_ok=True, ignore=shutil.ignore_patterns("locks"))
    shutil.rmtree(lake_dir / "tables" / "models")
    settings = make_settings(lake_dir, *STORE, *BUDGET)
    lake = Lake.at(str(lake_dir))
    summary = json.loads((_learned / "summary.json").read_text().replace(str(_learned / "lake"), str(lake_dir)))
    record_model(spark, lake, read_card(summary["model_dir"]), dataset=settings.dataset)
    return settings, lake, summary
