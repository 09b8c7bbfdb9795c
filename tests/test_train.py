"""Training learns a planted signal, and only a real one; two barrier workers agree; resume works."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from pyspark.sql import functions as F
from sklearn.metrics import roc_auc_score

from xray_spark.dev.synthetic import write_archive
from xray_spark.lake import Lake
from xray_spark.prepare import PrepareInputs, run_prepare

from .conftest import make_settings
from .jobs import kill_when

#: A small training budget: 800 images at 96 px, 60/40 train/val, 30 epochs of small_cnn. At 14
#: epochs the model was still improving at the last epoch, and the order the reader's two threads
#: deliver row groups in (not fixed by the seed) moved the mean validation AUROC between 0.79
#: and 0.87; 20 epochs left a margin over the 0.80 bar, but the heatmaps' pooled pointing game
#: then ranged 0.68-0.80+ over four runs against its 0.8 bar; at 30 it was 0.92 and 0.94.
STORE = ["image.size=96", "split.train=0.6", "split.val=0.4", "split.test=0.0", "prepare.images_per_file=100"]
EPOCHS = 30
BUDGET = [f"train.epochs={EPOCHS}", "train.eval_max_rows=200", f"train.early_stopping_patience={EPOCHS}"]


def _shuffle_labels(archive: Path, out: Path, seed: int) -> Path:
    """The same images with the Finding Labels column permuted across rows: no signal left."""
    with open(archive / "Data_Entry_2017.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], rows[1:]
    labels = [r[1] for r in body]
    np.random.default_rng(seed).shuffle(labels)
    out.mkdir()
    with open(out / "Data_Entry_2017.csv", "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows([[r[0], label, *r[2:]] for r, label in zip(body, labels, strict=True)])
    return out


def _best_predictions(model_dir: Path):
    state = json.loads((model_dir / "checkpoints" / "state.json").read_text())
    return np.load(model_dir / "checkpoints" / state["best_predictions"])


@pytest.fixture(scope="module")
def learning_archive(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("learn")
    write_archive(out, 800, 96, seed=21)
    return out


def _train(spark, archive: Path, lake_dir: Path, metadata: Path, *extra: str, bbox: Path | None = None):
    settings = make_settings(lake_dir, *STORE, *BUDGET, *extra)
    lake = Lake.at(settings.lake)
    run_prepare(
        spark, lake, settings, PrepareInputs(str(metadata), str(archive / "images"), str(bbox) if bbox else None)
    )
    from xray_spark.train.pipeline import run_training

    return settings, lake, run_training(spark, lake, settings)


@pytest.fixture(scope="module")
def trained(spark, learning_archive, tmp_path_factory):
    return _train(
        spark,
        learning_archive,
        tmp_path_factory.mktemp("learnlake"),
        learning_archive / "Data_Entry_2017.csv",
        bbox=learning_archive / "BBox_List_2017.csv",
    )


def test_small_cnn_learns_the_planted_findings(trained):
    _, _, summary = trained
    assert summary["val_auroc_mean"] >= 0.80, summary["val_auroc"]
    assert sum(v >= 0.7 for v in summary["val_auroc"].values()) >= 11, summary["val_auroc"]


def test_heatmaps_point_at_the_planted_lesions_and_a_shuffled_control_does_not(spark, trained):
    """Grad-CAM of the findings called on the validation films against the boxes of the planted lesions."""
    from xray_spark.dev.anatomy import LOCAL_LESIONS
    from xray_spark.evaluate.pipeline import localize
    from xray_spark.registry import resolve_model
    from xray_spark.score.pipeline import run_scoring

    settings, lake, summary = trained
    called = dataclasses.replace(settings, score=dataclasses.replace(settings.score, heatmaps="called"))
    scored = run_scoring(spark, lake, called, model_version=summary["version"], new_only=True)
    assert scored["heatmaps"]["written"] > 0
    located = localize(spark, lake, resolve_model(spark, lake, version=summary["version"]), "val", seed=0)
    local = {f: m for f, m in located["by_finding"].items() if f in LOCAL_LESIONS}
    # heatmaps exist for the findings called: most local lesions have some on the validation films
    assert len(local) >= 4, located["by_finding"].keys()
    boxes = sum(m["boxes"] for m in local.values())
    pooled = {
        k: sum(m[k] * m["boxes"] for m in local.values()) / boxes for k in ("pointing_tolerant", "shuffled", "chance")
    }
    report = {f: (m["boxes"], round(m["pointing_tolerant"], 2), round(m["shuffled"], 2)) for f, m in local.items()}
    # The bar: 0.7 pooled. Runs give 0.75-0.9 (CPU training is not bit-for-bit repeatable; 0.8 failed one run in
    # three), against 0.28-0.38 for another film's heatmap and 0.12-0.15 for chance: a broken heatmap reaches
    # neither the bar nor the margin over the shuffled control below.
    assert pooled["pointing_tolerant"] >= POINTING_BAR, report
    # Each finding with 10 boxes or more: its hits not significantly below the bar (one-sided binomial, 1%):
    # 3 of 10 can happen to a finding the model points at (p = 0.011), 2 of 10 cannot (0.0016).
    hits = {f: round(m["pointing_tolerant"] * m["boxes"]) for f, m in local.items()}
    weak = [f for f, m in local.items() if m["boxes"] >= 10 and _binomial_cdf(hits[f], m["boxes"], POINTING_BAR) < 0.01]
    assert not weak, report
    # Another film's heatmap hits above the area fraction (0.28-0.38 against 0.12-0.15 in three runs: any
    # film's heatmap lies in the lung fields, where the lesions are) and far below the film's own.
    assert pooled["shuffled"] < 0.5 and pooled["chance"] < 0.25, (pooled, report)
    assert pooled["pointing_tolerant"] - pooled["shuffled"] > 0.3, (pooled, report)


#: The pooled share of planted lesions the heatmaps must point at (within the tolerance).
POINTING_BAR = 0.7


def _binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p)."""
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1))


@pytest.fixture(scope="module")
def shuffled_model(spark, learning_archive, tmp_path_factory):
    """The learning archive's images with their labels shuffled across films, trained on for 10 epochs."""
    out = tmp_path_factory.mktemp("shuffled")
    shuffled = _shuffle_labels(learning_archive, out / "csv", seed=5)
    # 10 epochs: without signal the validation AUROC has nothing to climb towards at any budget
    return _train(spark, learning_archive, out / "lake", shuffled / "Data_Entry_2017.csv", "train.epochs=10")


def test_shuffled_labels_stay_at_chance(shuffled_model):
    _, _, summary = shuffled_model
    assert abs(summary["val_auroc_mean"] - 0.5) < 0.1, summary["val_auroc"]


def test_model_dir_contents_and_metrics_agree_with_sklearn(spark, trained):
    _, lake, summary = trained
    model_dir = Path(summary["model_dir"])
    meta = json.loads((model_dir / "model.json").read_text())
    assert meta["labels"] == summary["labels"] and len(meta["labels"]) == 14
    assert meta["input"] == {"size": 96, "channels": 1, "dtype": "uint8"}
    assert meta["preprocessing"]["scale"] == "x / 127.5 - 1"
    assert set(meta["thresholds"]) == set(meta["labels"])
    best = _best_predictions(model_dir)
    for i, name in enumerate(meta["labels"]):
        assert meta["val_auroc"][name] == pytest.approx(roc_auc_score(best["y"][:, i], best["p"][:, i]), abs=1e-9)
    with open(model_dir / "history.csv", newline="") as fh:
        history = list(csv.DictReader(fh))
    assert len(history) == meta["epochs_run"] == EPOCHS
    for column in (
        "loss",
        "val_loss",
        "binary_accuracy",
        "val_binary_accuracy",
        "auroc_mean",
        "val_auroc_mean",
        "auroc_nodule",
        "val_auroc_pneumothorax",
    ):
        assert column in history[0]
    for png in ("training_curves.png", "val_roc.png"):
        assert (model_dir / png).read_bytes().startswith(b"\x89PNG")
    row = spark.read.parquet(lake.table_url("models")).where(F.col("version") == summary["version"]).first()
    assert row["val_auroc_mean"] == pytest.approx(meta["val_auroc_mean"])


def test_saved_model_carries_its_preprocessing(trained):
    """The saved model, fed the store's raw uint8 pixels, reproduces the validation scores."""
    settings, lake, summary = trained
    from xray_spark.models import load_model_safely
    from xray_spark.train.data import ShardSpec, read_arrays

    val = read_arrays(lake.store_url(settings.dataset), ShardSpec("val"))
    model = load_model_safely(summary["model_file"])
    probs = model.predict(val["images"], verbose=0)
    best = _best_predictions(Path(summary["model_dir"]))
    np.testing.assert_allclose(probs, best["p"], atol=1e-4)


def test_two_barrier_workers_agree_and_split_the_train_rows(spark, prepared):
    settings, lake, _ = prepared
    import dataclasses

    from xray_spark.lake.store import read_manifest
    from xray_spark.train.barrier import train_on_spark
    from xray_spark.train.plan import TrainPlan

    manifest = read_manifest(lake, settings.dataset)
    train = dataclasses.replace(settings.train, epochs=2, num_workers=2, eval_max_rows=50)
    plan = TrainPlan(
        store_url=lake.store_url(settings.dataset),
        dataset=settings.dataset,
        labels=manifest.labels,
        image_size=manifest.image_size,
        model_dir=str(Path(lake.root) / "models" / "two-workers"),
        version="two-workers",
        train=train,
    )
    reports = train_on_spark(spark, plan, 2)
    assert [r["rank"] for r in reports] == [0, 1]
    assert reports[0]["final_weights_digest"] == reports[1]["final_weights_digest"]
    assert reports[0]["steps_per_epoch"] == reports[1]["steps_per_epoch"]
    ids0, ids1 = set(reports[0]["train_ids"]), set(reports[1]["train_ids"])
    assert ids0 and ids1 and not ids0 & ids1, "the shards are disjoint"
    store_train = {
        r["image_id"]
        for r in spark.read.parquet(lake.store_url(settings.dataset))
        .where(F.col("split") == "train")
        .select("image_id")
        .collect()
    }
    assert ids0 | ids1 == store_train, "together they cover the train split"
    assert (Path(plan.model_dir) / "model.keras").exists()


def test_interrupted_training_resumes_from_its_checkpoint(spark, prepared, tmp_path):
    _, lake, _ = prepared
    lake_dir = tmp_path / "lake"
    lake_dir.mkdir()
    os.symlink(Path(lake.root) / "petastorm", lake_dir / "petastorm")  # the same store, a lake of its own
    args = ["--lake", lake_dir, "--epochs", "30", "--set", "spark.driver_memory=1g", "--set", "train.eval_max_rows=50"]

    def two_epochs_checkpointed() -> bool:
        found = list((lake_dir / "models").glob("*/checkpoints/state.json"))
        return bool(found) and json.loads(found[0].read_text())["epoch"] >= 2

    kill_when("train", args, two_epochs_checkpointed, what="its second checkpoint")
    state_files = list((lake_dir / "models").glob("*/checkpoints/state.json"))
    interrupted = json.loads(state_files[0].read_text())
    assert not interrupted["finished"] and not (state_files[0].parents[1] / "model.keras").exists()
    version = state_files[0].parents[1].name

    from xray_spark.train.pipeline import run_training

    resumed_settings = make_settings(lake_dir, f"train.epochs={interrupted['epoch'] + 1}", "train.eval_max_rows=50")
    summary = run_training(spark, Lake.at(str(lake_dir)), resumed_settings, resume=True)
    assert summary["version"] == version
    state = json.loads(state_files[0].read_text())
    assert state["finished"] and state["epoch"] == interrupted["epoch"] + 1
    assert [r["epoch"] for r in state["history"]] == list(range(1, state["epoch"] + 1))
    assert state["history"][: interrupted["epoch"]] == interrupted["history"]
    from xray_spark.models import load_model_safely

    assert load_model_safely(summary["model_file"]).output_shape == (None, 14)


def test_imagenet_weights_offline_fail_in_one_clear_line(monkeypatch, tmp_path):
    from xray_spark.errors import UsageError
    from xray_spark.models import build_model

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # no cached weights
    try:
        model = build_model("mobilenet_v2", 3, 96, init_weights="imagenet")
    except UsageError as exc:  # offline, as CI is
        assert "could not load ImageNet weights for mobilenet_v2" in str(exc)
        assert "--init-weights none" in str(exc)
    else:  # a machine that can download them: the backbone then holds non-trivial weights
        assert model.output_shape == (None, 3)
        assert any(float(np.abs(w).sum()) > 0 for w in model.get_layer("mobilenetv2_1.00_96").get_weights())


def test_a_failing_worker_fails_the_stage_with_its_own_error(spark, prepared, tmp_path):
    import dataclasses

    from xray_spark.errors import XraySparkError
    from xray_spark.lake.store import read_manifest
    from xray_spark.train.barrier import train_on_spark
    from xray_spark.train.plan import TrainPlan

    settings, lake, _ = prepared
    manifest = read_manifest(lake, settings.dataset)
    train = dataclasses.replace(
        settings.train, epochs=1, num_workers=2, init_weights=str(tmp_path / "no-such.weights.h5")
    )
    plan = TrainPlan(
        store_url=lake.store_url(settings.dataset),
        dataset=settings.dataset,
        labels=manifest.labels,
        image_size=manifest.image_size,
        model_dir=str(tmp_path / "model"),
        version="failing",
        train=train,
    )
    started = time.monotonic()
    with pytest.raises(XraySparkError, match=r"a training worker failed: .*could not load weights from .*no-such"):
        train_on_spark(spark, plan, 2)
    assert time.monotonic() - started < 300, "a failure must not wait out a collective timeout"


def test_more_workers_than_row_groups_is_a_clear_error(prepared):
    from xray_spark.errors import UsageError
    from xray_spark.lake.store import check_shardable, row_group_count

    settings, lake, _ = prepared
    url = lake.store_url(settings.dataset)
    groups = row_group_count(url)
    assert groups == 4  # 160 images, 40 per file, one row group each
    check_shardable(url, groups)
    with pytest.raises(UsageError, match=r"has 4 row group\(s\), fewer than train.num_workers=5"):
        check_shardable(url, groups + 1)


def test_the_training_reader_yields_each_row_once_with_the_stores_pixels(prepared):
    """The batch reader + tf.data decode against make_reader's own codec, row for row; a short epoch fails."""
    from xray_spark.train.data import RowLoss, ShardSpec, read_arrays, training_dataset

    settings, lake, _ = prepared
    url = lake.store_url(settings.dataset)
    reference = read_arrays(url, ShardSpec("train"))  # make_reader: Petastorm decodes with its codec
    n, size, n_labels = len(reference["ids"]), reference["images"].shape[1], reference["labels"].shape[1]
    assert n > 40

    def fingerprints(images: np.ndarray, labels: np.ndarray) -> list[tuple]:
        """Each row as (label bits, pixel bytes): a multiset that one lost, doubled or altered row changes."""
        return sorted((lab.astype(np.uint8).tobytes(), img.tobytes()) for img, lab in zip(images, labels, strict=True))

    def epoch(**kwargs) -> tuple[np.ndarray, np.ndarray]:
        images, labels = [], []
        with training_dataset(
            url,
            ShardSpec("train"),
            image_size=size,
            n_labels=n_labels,
            batch_size=16,
            shuffle_buffer=64,
            seed=3,
            **kwargs,
        ) as ds:
            for x, y, w in ds:
                assert x.dtype.name == "uint8" and set(np.unique(w.numpy())) == {1.0}
                images.append(x.numpy())
                labels.append(y.numpy())
        return np.concatenate(images), np.concatenate(labels)

    images, labels = epoch(expected_rows=n)
    assert images.shape == (n, size, size, 1)
    assert fingerprints(images, labels) == fingerprints(reference["images"], reference["labels"])
    with pytest.raises(RowLoss, match=f"returned {n} of the {n + 1} rows"):
        epoch(expected_rows=n + 1)


#: Another hospital's films: the same findings drawn darker instead of brighter, no labels CSV.
HOSPITAL = ["dataset=hospital", "quarantine.max_fraction=0.5", "split.train=0.5", "split.val=0.2", "split.test=0.3"]
FINE_TUNE = [
    "train.init_weights=champion",
    "train.verdicts=true",
    "train.epochs=12",
    "train.early_stopping_patience=12",
    # The site's rule for this experiment, set before: one reader's verdict replaces the CSV's label, and a reader
    # far from everyone else is used (the shuffled control is such a reader, on purpose)
    "train.verdicts_min_readers_over_csv=1",
    "train.verdicts_flagged=include",
]


def _verdicts_from(truth: dict[str, set[str]], calls: dict[str, list[str]], path: Path, version: str) -> Path:
    """A reader who knows the truth: confirms the right calls, rejects the wrong ones, adds what was missed."""
    from xray_spark.web.verdicts import CONFIRM, MISSED, REJECT, Verdict, VerdictStore

    store = VerdictStore(str(path))
    for image_id, positives in sorted(truth.items()):
        called = tuple(calls[image_id])
        marks = {f: CONFIRM if f in positives else REJECT for f in called}
        marks |= {f: MISSED for f in positives if f not in called}
        verdict = Verdict("hospital", image_id, "reader", version, called, marks, no_finding=not positives)
        assert verdict.complete()
        store.record(verdict, f"{path.stem}-{image_id}")
    return path


def _publish(spark, lake: Lake, path: Path) -> None:
    from xray_spark.jobs.verdicts import SCHEMA, rows
    from xray_spark.lake import tables
    from xray_spark.web.verdicts import VerdictStore

    table = spark.createDataFrame(rows(VerdictStore(str(path)).submissions()), SCHEMA)
    tables.write_table(table, lake, "verdicts", mode="overwrite")


def _mean_auroc(spark, lake: Lake, version: str, truth: dict[str, set[str]], held_out: set[str]) -> float:
    from pyspark.sql import functions as F
    from sklearn.metrics import roc_auc_score

    from xray_spark.labels import probability_column

    rows = (
        spark.read.parquet(lake.table_url("predictions"))
        .where((F.col("dataset") == "hospital") & (F.col("model_version") == version))
        .collect()
    )
    rows = [r for r in rows if r["image_id"] in held_out]
    scores = []
    for finding in sorted({f for s in truth.values() for f in s}):
        y = [finding in truth[r["image_id"]] for r in rows]
        if 3 <= sum(y) <= len(y) - 3:
            scores.append(roc_auc_score(y, [r[probability_column(finding)] for r in rows]))
    assert len(scores) >= 5, "enough findings to compare on"
    return float(np.mean(scores))


def test_verdicts_fine_tune_the_champion_to_a_hospitals_films_and_shuffled_verdicts_do_not(
    spark, trained, tmp_path, monkeypatch
):
    import dataclasses

    from pyspark.sql import functions as F

    from xray_spark.dev.dicom_archive import write_dicom_archive
    from xray_spark.registry import set_alias
    from xray_spark.score.pipeline import run_scoring
    from xray_spark.train.pipeline import run_training

    _, lake, champion = trained
    set_alias(spark, lake, champion["version"], reason="the NIH-style model")
    # half the patients in a labels CSV (the truth), as a hospital's export may come; every film gets a verdict
    films = write_dicom_archive(tmp_path / "h", n_images=600, size=96, seed=31, labelled=0.5, finding_contrast=-1.0)
    truth = {str(ds.SOPInstanceUID): set(study.findings) for study, ds, _ in films}
    settings = make_settings(Path(lake.root), *STORE, *BUDGET, *HOSPITAL)
    monkeypatch.setenv("XRAY_SPARK_PSEUDONYM_KEY", "a test key that is long enough to be a key")
    export, labels = str(tmp_path / "h" / "export"), str(tmp_path / "h" / "labels.csv")
    run_prepare(spark, lake, settings, PrepareInputs(None, export, source="dicom", labels=labels))
    run_scoring(spark, lake, settings, new_only=True)
    calls = {
        r["image_id"]: list(r["positive_findings"])
        for r in spark.read.parquet(lake.table_url("predictions")).where(F.col("dataset") == "hospital").collect()
    }
    truth = {k: v for k, v in truth.items() if k in calls}
    assert len(truth) >= 550, "the films were stored and scored"
    tuned_settings = make_settings(Path(lake.root), *STORE, *BUDGET, *HOSPITAL, *FINE_TUNE)
    results = {}
    permuted = list(truth.values())
    np.random.default_rng(3).shuffle(permuted)
    for name, labels in (("verdicts", truth), ("shuffled", dict(zip(truth, permuted, strict=True)))):
        _publish(spark, lake, _verdicts_from(labels, calls, tmp_path / f"{name}.sqlite", champion["version"]))
        if name == "shuffled":  # a reader no better than chance: by default, no training on their verdicts
            from xray_spark.errors import UsageError

            refuse = make_settings(
                Path(lake.root), *STORE, *BUDGET, *HOSPITAL, *FINE_TUNE, "train.verdicts_flagged=refuse"
            )
            with pytest.raises(UsageError, match=r"no better than chance \(reader: kappa"):
                run_training(spark, lake, refuse)
        tuned = run_training(spark, lake, tuned_settings)
        assert tuned["fine_tuned_from"] == champion["version"]
        assert tuned["verdicts"]["films_with_verdicts"] == len(truth)
        flagged = [r["reader"] for r in tuned["verdicts"]["readers"] if r["flagged"]]
        assert flagged == ([] if name == "verdicts" else ["reader"]), tuned["verdicts"]["readers"]
        assert sum(tuned["verdicts"]["films_per_split"].values()) == len(truth), "the CSV's films and the verdicts'"
        run_scoring(spark, lake, dataclasses.replace(settings), model_version=tuned["version"])
        results[name] = tuned
    copy = spark.read.parquet(results["verdicts"]["verdicts"]["store_url"])
    held_out = {r["image_id"] for r in copy.where(F.col("split") == "test").select("image_id").collect()}
    trained_on = {r["image_id"] for r in copy.where(F.col("split") == "train").select("image_id").collect()}
    assert len(held_out) >= 120 and not held_out & trained_on
    auroc = {
        "champion": _mean_auroc(spark, lake, champion["version"], truth, held_out),
        **{k: _mean_auroc(spark, lake, v["version"], truth, held_out) for k, v in results.items()},
    }
    print(auroc)
    # the champion transfers to the darker findings unevenly (0.74 to 0.78 seen): fine-tuning must beat it
    # clearly, and the shuffled control by a margin no broken pipeline reaches
    assert auroc["verdicts"] >= 0.75 and auroc["verdicts"] - auroc["champion"] >= 0.05, auroc
    # the CSV holds the truth for half the films: the shuffled control stays at chance only if verdicts win over it
    assert auroc["shuffled"] < 0.62 and auroc["verdicts"] - auroc["shuffled"] >= 0.15, auroc


def test_a_challenger_trained_longer_passes_and_one_trained_on_shuffled_labels_fails(spark, trained, shuffled_model):
    import argparse

    from xray_spark.challenge.pipeline import run_challenge
    from xray_spark.errors import UsageError
    from xray_spark.jobs.promote import _checked
    from xray_spark.registry import alias_holder, register_model, set_alias
    from xray_spark.score.pipeline import run_scoring
    from xray_spark.train.pipeline import run_training

    from .jobs import checked, run_job

    _, lake, longer = trained
    # The rule, written down before, for a set this small (320 val films; this store has no test split): judged
    # from 15 positives, a 0.05 margin, a sensitivity drop of up to two films in 15. With 10 positives, a 0.02
    # margin and 0.05 (one film), a challenger 0.26 better in mean AUROC failed on one finding's noise.
    rule = ["promotion.split=val", "promotion.min_positives=15", "promotion.non_inferiority_margin=0.05"]
    rule += ["promotion.max_sensitivity_drop=0.15", "promotion.bootstrap=200"]
    settings = make_settings(Path(lake.root), *STORE, *rule, "train.epochs=3", "train.eval_max_rows=200")
    champion = run_training(spark, lake, settings)  # the champion: 3 epochs
    shuffled = register_model(spark, lake, shuffled_model[2]["model_dir"], dataset="nih")["version"]
    set_alias(spark, lake, champion["version"], reason="the short run")
    for version in (champion["version"], longer["version"], shuffled):
        run_scoring(spark, lake, settings, model_version=version)
    passed = run_challenge(spark, lake, settings, challenger=longer["version"])
    failed = run_challenge(spark, lake, settings, challenger=shuffled)
    assert passed["passed"] and passed["champion"] == champion["version"], passed["rule"]
    assert not failed["passed"], failed["rule"]
    assert {r["rule"] for r in failed["rule"] if not r["passed"]} >= {"non-inferiority", "mean AUROC"}
    judged = [f for f in passed["findings"] if f["judged"]]
    assert len(judged) >= 3 and all(f["delong_low"] <= f["difference"] <= f["delong_high"] for f in judged)
    recorded = spark.read.parquet(lake.table_url("challenges")).where(f"challenge_id = '{failed['challenge_id']}'")
    rows = recorded.collect()
    assert len(rows) == len(failed["findings"]) and not any(r["passed"] for r in rows)
    assert "non-inferiority" in rows[0]["rules"] and Path(failed["page"]).is_file()

    def args(challenge: str) -> argparse.Namespace:
        return argparse.Namespace(if_passed=challenge, model_version=None, alias="champion", reason="")

    before = alias_holder(spark, lake)
    for challenge, message in ((failed["challenge_id"], "failed"), ("no-such-challenge", "no challenge")):
        with pytest.raises(UsageError, match=message) as refused:
            _checked(spark, lake, args(challenge), before)
        assert "\n" not in str(refused.value)
    promoted = checked(run_job("promote", ["--lake", lake.root, "--if-passed", passed["challenge_id"]]))
    row = json.loads(promoted.stdout)
    assert row["version"] == longer["version"] and row["reason"].startswith(
        f"challenge {passed['challenge_id']} passed"
    )
    refused = run_job("promote", ["--lake", lake.root, "--if-passed", passed["challenge_id"]])
    assert refused.returncode == 2 and "challenge it again" in refused.stderr.strip().splitlines()[-1]
    assert passed["outcome"] == "PASS" and failed["outcome"] == "FAIL"
    assert any(r["rule"] == "power" for r in passed["rule"]) and passed["power"]

    # On the films the models were trained on, a challenge would measure memory: refused, by the patient digests
    leaked = make_settings(Path(lake.root), *STORE, *rule[1:], "promotion.split=train")
    with pytest.raises(UsageError, match=r"was trained on (\d+) of the \1 patients of the 'train' films"):
        run_challenge(spark, lake, leaked, challenger=longer["version"], champion=champion["version"])

    # A challenger that calls 6 of 14 findings is not judged on the 6 alone
    narrow = Path(lake.root) / "models" / "narrow"
    shutil.copytree(longer["model_dir"], narrow)
    meta = json.loads((narrow / "model.json").read_text())
    kept = meta["labels"][:6]
    meta |= {"version": "narrow", "thresholds": {k: (v if k in kept else None) for k, v in meta["thresholds"].items()}}
    (narrow / "model.json").write_text(json.dumps(meta))
    register_model(spark, lake, str(narrow), dataset="nih")
    set_alias(spark, lake, champion["version"], reason="back to the short run")
    run_scoring(spark, lake, settings, model_version="narrow")
    dropped = run_challenge(spark, lake, settings, challenger="narrow")
    rule_kept = next(r for r in dropped["rule"] if r["rule"] == "findings kept")
    assert dropped["outcome"] == "FAIL" and not rule_kept["passed"], dropped["rule"]
    allowed = make_settings(Path(lake.root), *STORE, *rule, f"promotion.may_drop={json.dumps(meta['labels'][6:])}")
    assert next(
        r for r in run_challenge(spark, lake, allowed, challenger="narrow")["rule"] if r["rule"] == "findings kept"
    )["passed"]
