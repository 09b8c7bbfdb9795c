"""Training learns a planted signal: the learning set's model (tests/learning.py) against sklearn, its saved
preprocessing, its heatmaps against the planted lesions; the training reader and its refusals."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
from pyspark.sql import functions as F
from sklearn.metrics import roc_auc_score

from .learning import EPOCHS, best_predictions, pooled_pointing


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
    card = resolve_model(spark, lake, version=summary["version"])
    located = localize(spark, lake, card, "val", str(card.dataset), seed=0)
    local = {f: m for f, m in located["by_finding"].items() if f in LOCAL_LESIONS}
    # heatmaps exist for the findings called: most local lesions have some on the validation films
    assert len(local) >= 4, located["by_finding"].keys()
    pooled, report = pooled_pointing(located)
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


def test_model_dir_contents_and_metrics_agree_with_sklearn(spark, trained):
    _, lake, summary = trained
    model_dir = Path(summary["model_dir"])
    meta = json.loads((model_dir / "model.json").read_text())
    assert meta["labels"] == summary["labels"] and len(meta["labels"]) == 14
    assert meta["input"] == {"size": 96, "channels": 1, "dtype": "uint8"}
    assert meta["preprocessing"]["scale"] == "x / 127.5 - 1"
    assert set(meta["thresholds"]) == set(meta["labels"])
    best = best_predictions(model_dir)
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
    best = best_predictions(Path(summary["model_dir"]))
    np.testing.assert_allclose(probs, best["p"], atol=1e-4)


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
