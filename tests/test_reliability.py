"""Faults found by hostile testing: nothing lost, nothing duplicated, nothing run from a model file, nothing exposed.

One test (or more) per fault; the image bombs, the CSV line break, contradictory labels and
films too small or blank are rows of the bad-input corpus (test_prepare.py, test_images.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from petastorm import make_reader
from pyspark.sql import functions as F

from xray_spark import locks, model_card, registry, tables
from xray_spark.dev.synthetic import METADATA_HEADER
from xray_spark.errors import LockBusy, ModelRefused, UsageError
from xray_spark.lake import Lake
from xray_spark.prepare import PrepareInputs, run_prepare
from xray_spark.schema import XraySchema, decode_labels
from xray_spark.score.pipeline import run_scoring
from xray_spark.store import read_manifest

from .conftest import ROOT, make_settings
from .jobs import job_command, job_env, run_job


def _copy_lake(prepared, dest: Path) -> tuple:
    """A private copy of the prepared lake (store, tables, models) that a test may damage."""
    _, lake, _ = prepared
    shutil.copytree(lake.root, dest, ignore=shutil.ignore_patterns("reports", "locks", "predictions", "_staging"))
    return make_settings(dest), Lake.at(str(dest))


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# -- 1. a full prepare never wipes a store by accident -------------------------------------------
def test_a_full_prepare_that_would_remove_studies_is_refused(spark, prepared, archive, tmp_path):
    settings, lake = _copy_lake(prepared, tmp_path / "lake")
    empty = tmp_path / "empty-images"
    empty.mkdir()
    header_only = tmp_path / "header-only.csv"
    header_only.write_text(",".join(METADATA_HEADER) + "\n")
    before = _tree_digest(Path(lake.root) / "petastorm")
    for metadata, images in ((archive / "Data_Entry_2017.csv", empty), (header_only, archive / "images")):
        with pytest.raises(UsageError, match=r"would remove 160 of the 160 studies in store 'nih'.*--replace"):
            run_prepare(spark, lake, settings, PrepareInputs(str(metadata), str(images)))
    assert _tree_digest(Path(lake.root) / "petastorm") == before, "the refused runs changed nothing"
    assert len(read_manifest(lake, "nih").runs) == 1


def test_replace_is_explicit_keeps_the_history_and_studies_equal_the_store(spark, prepared, archive, tmp_path):
    settings, lake = _copy_lake(prepared, tmp_path / "lake")
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


#: A full prepare --replace run as its own process and SIGKILLed at one moment of its store swap.
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
    settings, lake = _copy_lake(prepared, tmp_path / "lake")
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
    settings, lake = _copy_lake(prepared, tmp_path / "lake")
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

    settings, lake = _copy_lake(prepared, tmp_path / "lake")
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
    settings, lake = _copy_lake(prepared, tmp_path / "lake")
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


# -- 2. make nightly never invents studies ---------------------------------------------------------
def test_nightly_without_tonights_csv_fails_in_one_line_and_writes_nothing(tmp_path):
    venv = tmp_path / "venv"  # stands in for .venv, so make does not install anything
    (venv / "bin").mkdir(parents=True)
    os.symlink(sys.executable, venv / "bin" / "python")
    (venv / ".installed").touch()
    incoming = tmp_path / "incoming" / "20261126"
    (incoming / "images").mkdir(parents=True)
    lake = tmp_path / "lake"
    result = subprocess.run(
        ["make", "-s", "nightly", f"VENV={venv}", f"LAKE={lake}", f"INCOMING={incoming}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("nightly: error:")]
    assert len(errors) == 1 and "Data_Entry_2017.csv has not arrived" in errors[0], result.stderr
    assert not lake.exists(), "nothing was written into the lake"
    assert sorted(p.name for p in incoming.iterdir()) == ["images"], "no synthetic archive was made"


# -- 3. one writer at a time -----------------------------------------------------------------------
def test_a_second_holder_is_refused_in_one_line_and_the_lock_is_released_on_error(tmp_path):
    lake = Lake.at(str(tmp_path))
    with locks.lake_lock(lake, "score-v1", job="score") as owner:
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
        busy = pytest.raises(LockBusy, match=rf"pid {os.getpid()} on host .* holds .*score-v1.lock")
        with busy as info, locks.lake_lock(lake, "score-v1", job="score"):
            pass
        assert "\n" not in str(info.value)
    with pytest.raises(RuntimeError), locks.lake_lock(lake, "score-v1", job="score"):
        raise RuntimeError("the run failed")
    assert not (tmp_path / "locks" / "score-v1.lock").exists(), "released on every exit path"


def test_a_waiting_run_gets_the_lock_when_the_first_one_ends(tmp_path):
    lake = Lake.at(str(tmp_path))
    holding = threading.Event()

    def first() -> None:
        with locks.lake_lock(lake, "prepare-nih", job="prepare"):
            holding.set()
            time.sleep(1.5)

    thread = threading.Thread(target=first)
    thread.start()
    holding.wait(10)
    started = time.monotonic()
    with locks.lake_lock(lake, "prepare-nih", job="prepare", wait_seconds=30):
        waited = time.monotonic() - started
    thread.join()
    assert 0.5 < waited < 30


@pytest.mark.parametrize("owner", ["dead pid", "reused pid", "never written"])
def test_a_lock_whose_owner_is_provably_dead_is_taken_over(tmp_path, owner):
    lake = Lake.at(str(tmp_path))
    path = tmp_path / "locks" / "score-v1.lock"
    path.parent.mkdir()
    record = locks.owner_record("score")
    if owner == "dead pid":
        child = subprocess.Popen([sys.executable, "-c", "pass"])
        child.wait()
        record["pid"] = child.pid
    elif owner == "reused pid":
        record["process_start"] = record["process_start"] - 1  # our pid, but another process's start
    path.write_text("" if owner == "never written" else json.dumps(record))
    if owner == "never written":
        old = time.time() - 2 * locks.UNWRITTEN_STALE_S
        os.utime(path, (old, old))
    with locks.lake_lock(lake, "score-v1", job="score") as mine:
        assert json.loads(path.read_text())["token"] == mine["token"]


def test_a_live_owner_on_another_host_is_never_taken_over(tmp_path):
    lake = Lake.at(str(tmp_path))
    path = tmp_path / "locks" / "score-v1.lock"
    path.parent.mkdir()
    record = locks.owner_record("score") | {"host": "another-node", "pid": 1}
    path.write_text(json.dumps(record))
    with pytest.raises(LockBusy, match="pid 1 on host another-node"), locks.lake_lock(lake, "score-v1", job="score"):
        pass
    assert json.loads(path.read_text()) == record


def test_prepare_and_score_take_their_locks(spark, prepared, small_model, archive, tmp_path):
    settings, lake = _copy_lake(prepared, tmp_path / "lake")
    inputs = PrepareInputs(str(archive / "Data_Entry_2017.csv"), str(archive / "images"), incremental=True)
    with locks.lake_lock(lake, "prepare-nih", job="prepare"), pytest.raises(LockBusy, match=r"prepare-nih\.lock"):
        run_prepare(spark, lake, settings, inputs)
    version = small_model["version"]
    with locks.lake_lock(lake, f"score-{version}", job="score"), pytest.raises(LockBusy, match=rf"score-{version}"):
        run_scoring(spark, lake, settings, model_version=version, new_only=True)
    run_prepare(spark, lake, settings, inputs)  # free again: runs, adds nothing, and is recorded
    assert len(read_manifest(lake, "nih").runs) == 2, "the manifest records every run"


@pytest.mark.slow
def test_two_nightly_scoring_runs_at_once_score_each_study_once(spark, prepared, small_model, tmp_path):
    """The reproduction: two `score --new-only` started together on one lake."""
    _, lake = _copy_lake(prepared, tmp_path / "lake")
    args = ["--lake", lake.root, "--new-only", "--set", "spark.driver_memory=1g", "--set", "locks.wait_seconds=600"]
    procs = [
        subprocess.Popen(
            job_command("score", [*args, "--summary-json", str(tmp_path / f"run{i}.json")]),
            env=job_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    errors = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for e in errors]
    written = sorted(json.loads((tmp_path / f"run{i}.json").read_text())["written"] for i in range(2))
    assert written == [0, 160], "the second run waited, then found nothing new"
    tables.register_tables(spark, lake)
    counts = spark.table("xray.predictions").groupBy("image_id").count()
    assert counts.count() == 160 and counts.where("count > 1").count() == 0


# -- 5. a model file never runs code --------------------------------------------------------------
def _lambda_model(marker: Path):
    from xray_spark.models import keras

    k = keras()
    target = str(marker)  # a plain string: Keras serialises the function's closure

    def touch(x):  # runs whenever the layer is built or called: a stand-in for any code
        import pathlib

        pathlib.Path(target).write_text("ran")
        return x

    inputs = k.Input((8, 8, 1))
    outputs = k.layers.Dense(2)(k.layers.Flatten()(k.layers.Lambda(touch)(inputs)))
    model = k.Model(inputs, outputs)
    marker.unlink(missing_ok=True)  # built once here, on purpose
    return model


def _model_folder(root: Path, model, file_name: str) -> Path:
    root.mkdir()
    model.save(str(root / file_name))
    meta = {"version": root.name, "model_file": file_name, "labels": ["Mass", "Nodule"], "input": {"size": 8}}
    (root / "model.json").write_text(json.dumps(meta))
    return root


def test_h5_savedmodel_and_lambda_models_are_refused_without_running_their_code(spark, tmp_path, small_model):
    marker = tmp_path / "lambda-ran"
    model = _lambda_model(marker)
    h5 = _model_folder(tmp_path / "h5-model", model, "model.h5")
    keras_file = _model_folder(tmp_path / "keras-model", model, "model.keras")
    marker.unlink(missing_ok=True)
    lake = Lake.at(str(tmp_path / "lake"))
    with pytest.raises(ModelRefused, match=r"model\.h5 is a HDF5 file: loading one can run Python"):
        registry.register_model(spark, lake, str(h5), dataset="nih")
    with pytest.raises(ModelRefused, match=r"holds a Lambda layer.*refused \(Keras safe mode\)"):
        registry.register_model(spark, lake, str(keras_file), dataset="nih")
    saved = tmp_path / "saved-model"
    shutil.copytree(small_model["model_dir"], saved)
    (saved / "model.keras").unlink()
    (saved / "model.keras").mkdir()  # a SavedModel folder under the expected name
    with pytest.raises(ModelRefused, match=r"is a SavedModel folder"):
        model_card.read_card(str(saved))
    assert not marker.exists(), "no Lambda ran while the models were checked"
    assert not (tmp_path / "lake" / "models").exists(), "nothing refused was copied into the lake"


def test_a_tampered_model_file_is_refused(spark, prepared, small_model, tmp_path):
    _, lake = _copy_lake(prepared, tmp_path / "lake")
    folder = Path(lake.root) / "models" / small_model["version"]
    registry.resolve_model(spark, lake, version=small_model["version"])  # as trained: accepted
    data = bytearray((folder / "model.keras").read_bytes())
    data[-100] ^= 0xFF
    (folder / "model.keras").write_bytes(bytes(data))
    with pytest.raises(ModelRefused, match=r"model.keras of model .* does not match the SHA-256 recorded"):
        registry.resolve_model(spark, lake, version=small_model["version"])


def test_a_model_trained_elsewhere_is_registered_then_accepted(spark, prepared, small_model, tmp_path):
    _, lake = _copy_lake(prepared, tmp_path / "lake")
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(small_model["model_dir"], elsewhere)
    meta = json.loads((elsewhere / "model.json").read_text())
    (elsewhere / "model.json").write_text(json.dumps(meta | {"version": "hospital-model-1"}))
    with pytest.raises(ModelRefused, match=r"is not registered in xray\.models.*register_model\.py"):
        registry.resolve_model(spark, lake, path=str(elsewhere))
    row = registry.register_model(spark, lake, str(elsewhere), dataset="nih")
    assert row["path"] == str(Path(lake.root) / "models" / "hospital-model-1")
    folder = registry.resolve_model(spark, lake, version="hospital-model-1")
    assert folder.model_sha256 == model_card.file_sha256(str(elsewhere / "model.keras"))
    with pytest.raises(UsageError, match="already registered"):
        registry.register_model(spark, lake, str(elsewhere), dataset="nih")


def _with_extra_entry(folder: Path, name: str, size: int) -> None:
    """Add an entry of ``size`` zero bytes to the folder's model.keras (deflated: 2 GiB of zeros is ~2 MB)."""
    import zipfile

    path = folder / "model.keras"
    with (
        zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive,
        archive.open(name, "w", force_zip64=True) as entry,
    ):
        chunk = bytes(1 << 20)
        for _ in range(size >> 20):
            entry.write(chunk)


@pytest.mark.parametrize(
    ("name", "size", "said"),
    [
        ("model.weights.h5.bomb", 1 << 20, "holds what a .keras archive does not"),
        ("../../outside.txt", 1 << 20, "holds what a .keras archive does not"),
        ("assets/zeros.bin", (2 << 30) + (1 << 20), "unpacks to 2,14"),
    ],
)
def test_a_model_archive_with_a_bomb_or_a_stranger_is_refused_at_registration(
    spark, prepared, small_model, tmp_path, name, size, said
):
    _, lake = _copy_lake(prepared, tmp_path / "lake")
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(small_model["model_dir"], elsewhere)
    meta = json.loads((elsewhere / "model.json").read_text())
    (elsewhere / "model.json").write_text(json.dumps(meta | {"version": "bomb-1"}))
    _with_extra_entry(elsewhere, name, size)
    with pytest.raises(ModelRefused, match=re.escape(said)):
        registry.register_model(spark, lake, str(elsewhere), dataset="nih")
    assert not (Path(lake.root) / "models" / "bomb-1").exists(), "nothing was registered"


# -- 6. nothing listens beyond loopback ----------------------------------------------------------
def _listening(pids: set[int]) -> list[str]:
    """host:port of every listening TCP socket that one of ``pids`` holds."""
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        with open(table) as fh:
            for line in fh.readlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and cols[9] in inodes:  # LISTEN
                    host, port = cols[1].split(":")
                    found.append(f"{_address(host, width)}:{int(port, 16)}")
    return found


def _address(hex_host: str, width: int) -> str:
    raw = bytes.fromhex(hex_host)
    if width == 8:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


def _descendants(pid: int) -> set[int]:
    from xray_spark.dev.cluster import process_tree

    return set(process_tree(pid))


LOOPBACK = ("127.0.0.1", "::1", "::ffff:127.0.0.1")


def test_local_mode_listens_on_loopback_only_ui_included(tmp_path):
    script = (
        "import sys\n"
        "from xray_spark.config import load_settings\n"
        "from xray_spark.session import build_session\n"
        "s = load_settings(None, ['spark.master=local[1]', 'spark.driver_memory=512m',\n"
        '    \'spark.conf={spark.ui.enabled: "true", spark.ui.port: "0"}\'])\n'
        "spark = build_session(s.spark)\n"
        "print(spark.sparkContext.uiWebUrl, flush=True)\n"
        "sys.stdin.read()\n"
    )
    env = {k: v for k, v in job_env().items() if k != "SPARK_LOCAL_IP"}
    proc = subprocess.Popen(
        [sys.executable, "-c", script], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        ui = proc.stdout.readline().strip()
        assert ui.startswith("http://"), "the UI was asked for and is on"
        listening = _listening(_descendants(proc.pid))
        assert listening, "the driver listens on some ports"
        assert all(addr.rsplit(":", 1)[0] in LOOPBACK for addr in listening), listening
        ui_port = int(ui.rsplit(":", 1)[1])
        assert any(addr.endswith(f":{ui_port}") for addr in listening)
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)


# -- 9. the reader decodes no label with np.load ----------------------------------------------------
def test_labels_decode_without_np_load_or_ast(prepared, monkeypatch):
    """Fails on Petastorm's NdarrayCodec, which calls np.load (and its ast-based header parser)."""
    import ast

    def forbidden(*_args, **_kwargs):
        raise AssertionError("np.load / ast.literal_eval on the reader's path")

    monkeypatch.setattr(np, "load", forbidden)
    monkeypatch.setattr(ast, "literal_eval", forbidden)
    settings, lake, _ = prepared
    with make_reader(
        lake.store_url(settings.dataset),
        schema_fields=[XraySchema.image_id, XraySchema.labels],
        reader_pool_type="thread",
    ) as reader:
        rows = list(reader)
    assert len(rows) == 160 and all(decode_labels(r.labels).shape == (14,) for r in rows)


def test_the_store_reads_right_with_many_threads_many_times(prepared):
    settings, lake, _ = prepared
    url = lake.store_url(settings.dataset)
    expected = {}
    with make_reader(url, schema_fields=[XraySchema.image_id, XraySchema.labels], reader_pool_type="dummy") as reader:
        for row in reader:
            expected[row.image_id] = decode_labels(row.labels)
    errors: list[BaseException] = []

    def read(_: int) -> None:
        try:
            with make_reader(
                url,
                schema_fields=[XraySchema.image_id, XraySchema.labels, XraySchema.image],
                num_epochs=5,
                reader_pool_type="thread",
                workers_count=8,
            ) as reader:
                for row in reader:
                    np.testing.assert_array_equal(decode_labels(row.labels), expected[row.image_id])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=read, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]


# -- 10. messages ------------------------------------------------------------------------------------
def test_a_model_of_another_image_size_is_one_line_before_any_task(spark, prepared, small_model, tmp_path):
    settings, lake = _copy_lake(prepared, tmp_path / "lake")
    manifest_path = Path(lake.root) / "petastorm" / "nih" / "_xray_store.json"
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps(manifest | {"image_size": 96}))
    with pytest.raises(UsageError, match=r"takes 64 px images and the store holds 96 px images") as info:
        run_scoring(spark, lake, settings, model_version=small_model["version"])
    assert "\n" not in str(info.value)
    assert not (Path(lake.root) / "tables" / "_staging").exists(), "refused before the scoring stage started"
    assert not (Path(lake.root) / "locks").exists(), "refused before the run took its lock"


def test_ctrl_c_during_a_query_exits_130_in_one_line(prepared, tmp_path):
    _, lake = _copy_lake(prepared, tmp_path / "lake")
    query = "SELECT sum(a.id * b.id) FROM range(200000) a CROSS JOIN range(200000) b"
    proc = subprocess.Popen(
        job_command("sql", ["--lake", lake.root, "--set", "spark.driver_memory=1g", query]),
        env=job_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if "settings that differ from the defaults" in line:
            break
    time.sleep(12)  # the session starts and the query runs
    assert proc.poll() is None, "the query finished before Ctrl-C"
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    _, rest = proc.communicate(timeout=120)
    stderr = "".join(lines) + rest
    assert proc.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr and "py4j" not in stderr, stderr[-3000:]
    assert [line for line in stderr.splitlines() if line.startswith("sql: ")] == [
        "sql: interrupted by SIGINT: stopped, nothing partial published"
    ]


# -- lake paths, volumes, and readers of a store being replaced ----------------------------------------
def test_a_lake_that_cannot_be_one_is_refused_in_one_line_before_spark(tmp_path):
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("x")
    for lake, said in ((a_file, "is a file, not a folder"), (tmp_path / "lakes" / "site#2", "holds '#' or '?'")):
        result = run_job("score", ["--lake", str(lake)], cwd=tmp_path)
        errors = [line for line in result.stderr.splitlines() if line.startswith("score: ")]
        assert result.returncode == 2 and len(errors) == 1 and said in errors[0], result.stderr[-2000:]
    space = tmp_path / "lakes" / "site 2 é"
    assert Lake.at(str(space)).root == str(space), "spaces and letters beyond ASCII are fine"


def test_score_never_reads_a_store_while_a_full_run_swaps_it(spark, prepared, small_model, tmp_path):
    settings, lake = _copy_lake(prepared, tmp_path / "lake")
    with (
        locks.store_replacer(lake, "nih", job="prepare"),
        pytest.raises(LockBusy, match=r"^store 'nih' is being replaced by a full prepare run, pid \d+"),
    ):
        run_scoring(spark, lake, settings, model_version=small_model["version"], new_only=True)
    assert not (Path(lake.root) / "tables" / "predictions").exists(), "nothing was scored"


def test_a_full_run_waits_for_the_stores_readers_then_swaps(prepared, tmp_path):
    _, lake = _copy_lake(prepared, tmp_path / "lake")
    order: list[str] = []
    reading = threading.Event()

    def reader() -> None:
        with locks.store_reader(lake, "nih", job="score"):
            reading.set()
            time.sleep(2)
            order.append("read")

    thread = threading.Thread(target=reader)
    thread.start()
    reading.wait(10)
    with locks.store_replacer(lake, "nih", job="prepare"):
        order.append("swap")
    thread.join(10)
    assert order == ["read", "swap"]
    with (
        pytest.raises(LockBusy, match="is still read by score run, pid"),
        locks.store_reader(lake, "nih", job="score"),
        locks.store_replacer(lake, "nih", job="prepare", wait_seconds=0.5),
    ):
        pass


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
    settings, lake = _copy_lake(prepared, tmp_path / "lake")
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


def test_two_datasets_prepared_at_once_keep_every_shared_row(spark, tmp_path):
    """siteA and siteB at the same time, twice: every quarantine row, both stores and both studies partitions."""
    from . import corpus

    root = corpus.make_bad_archive(tmp_path / "bad")
    lake_dir = tmp_path / "lake"
    lake = Lake.at(str(lake_dir))
    inputs = PrepareInputs(metadata=str(root / "Data_Entry_2017.csv"), images=str(root / "images"))
    errors: list[BaseException] = []

    def prepare(dataset: str, round_: int) -> None:
        settings = make_settings(lake_dir, f"dataset={dataset}", "quarantine.max_fraction=1.0")
        try:
            run_prepare(spark, lake, settings, dataclasses.replace(inputs, replace=round_ > 0))
        except BaseException as exc:
            errors.append(exc)

    per_run = sum(len(v) for v in corpus.EXPECTED_REASONS.values())
    for round_ in range(2):
        threads = [threading.Thread(target=prepare, args=(d, round_)) for d in ("siteA", "siteB")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(600)
        assert not errors, errors
        quarantine = spark.read.parquet(lake.table_url("quarantine"))
        studies = spark.read.parquet(lake.table_url("studies"))
        for dataset in ("siteA", "siteB"):
            assert quarantine.where(F.col("dataset") == dataset).count() == per_run * (round_ + 1), (round_, dataset)
            stored = spark.read.parquet(lake.store_url(dataset)).count()
            assert stored == len(corpus.GOOD) and studies.where(F.col("dataset") == dataset).count() == stored


@contextlib.contextmanager
def _small_disk(folder: Path, size: str):
    """A tmpfs of ``size`` mounted at ``folder`` for the block (skipped where mounting is not allowed)."""
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode(errors='replace').strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_full_disk_is_one_line_the_lock_is_released_and_the_rerun_works(archive, tmp_path):
    with _small_disk(tmp_path / "disk", "400k") as disk:
        args = ["--lake", str(disk / "lake"), "--metadata", str(archive / "Data_Entry_2017.csv")]
        args += ["--images", str(archive / "images"), "--set", "image.size=64", "--set", "spark.driver_memory=1g"]
        full = run_job("prepare", args, cwd=tmp_path)
        lines = [line for line in full.stderr.splitlines() if line.startswith("prepare: ")]
        assert full.returncode == 1 and len(lines) == 1 and "a disk is full: No space left on device" in lines[0]
        assert "Traceback" not in full.stderr and len(full.stderr.splitlines()) < 40, full.stderr[-3000:]
        assert not list((disk / "lake" / "locks").glob("*.lock")), "the lock was released"
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        again = run_job("prepare", args, cwd=tmp_path)
        assert again.returncode == 0, again.stderr[-3000:]


@pytest.mark.parametrize("labels", [["Alien", "Mass"], [], ["Mass", "Mass"]])
def test_a_model_with_unusable_labels_is_refused_at_registration(spark, prepared, small_model, tmp_path, labels):
    _, lake = _copy_lake(prepared, tmp_path / "lake")
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(small_model["model_dir"], elsewhere)
    meta = json.loads((elsewhere / "model.json").read_text())
    (elsewhere / "model.json").write_text(json.dumps(meta | {"version": "odd-labels-1", "labels": labels}))
    with pytest.raises(UsageError, match=r"its labels must be distinct findings of Atelectasis, "):
        registry.register_model(spark, lake, str(elsewhere), dataset="nih")
    assert not (Path(lake.root) / "models" / "odd-labels-1").exists()
