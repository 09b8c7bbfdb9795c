"""The model runtime seam: a runtime built only from the protocol (numpy, no TensorFlow) registers, scores and
explains; the per-worker cache stays bounded."""

from __future__ import annotations

import json
import sys
import zipfile

import cv2
import numpy as np
import pytest

from xray_spark import model_runtime
from xray_spark.errors import ModelRefused
from xray_spark.labels import raw_score_column
from xray_spark.lake import tables
from xray_spark.model_runtime import ExplainingRuntime, ModelCache, ModelFormat
from xray_spark.registry import register_model
from xray_spark.score.pipeline import run_scoring

from .conftest import make_settings
from .lakes import copy_lake

LABELS = ["Effusion", "Nodule"]
GRID = 8


class BrightnessRuntime:
    """A model in a ``.npz`` file: each finding's probability a logistic function of the film's mean grey level,
    and its heatmap the film's brightness on an 8 x 8 grid (where a bright film is "looked at")."""

    def __init__(self, weights: np.ndarray, size: int) -> None:
        self.weights = weights
        self.size = size

    @classmethod
    def open(cls, path: str) -> BrightnessRuntime:
        with np.load(path, allow_pickle=False) as data:
            return cls(np.asarray(data["weights"], dtype=np.float32), int(data["size"]))

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.size, self.size, 1)

    @property
    def n_outputs(self) -> int:
        return len(self.weights)

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        grey = pixels.reshape(len(pixels), -1).mean(axis=1, keepdims=True) / 255.0
        return (1 / (1 + np.exp(-self.weights[None, :] * (grey - 0.3) * 10))).astype(np.float32)

    def explain(self, pixels: np.ndarray, findings: np.ndarray) -> np.ndarray:
        n, cell = len(pixels), self.size // GRID
        blocks = pixels[:, :, :, 0].reshape(n, GRID, cell, GRID, cell).mean(axis=(2, 4)).astype(np.float32)
        return blocks / np.maximum(blocks.reshape(n, -1).max(axis=1), 1e-6)[:, None, None]


def check_npz(path: str) -> None:
    if not zipfile.is_zipfile(path):
        raise ModelRefused(f"model file {path} is not an .npz archive")


NPZ = ModelFormat(".npz", "a numpy brightness model (tests)", check_npz, BrightnessRuntime.open, explains=True)


@pytest.fixture
def npz_format(monkeypatch):
    """The format registered for this test; its runtime's code travels to Spark's workers by value."""
    from pyspark import cloudpickle

    monkeypatch.setitem(model_runtime.FORMATS, ".npz", NPZ)
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield NPZ
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def write_npz_model(folder, *, size: int, weights=(1.0, -1.0), labels=LABELS, version="brightness-1"):
    folder.mkdir(parents=True)
    np.savez(folder / "model.npz", weights=np.asarray(weights, dtype=np.float32), size=np.int64(size))
    meta = {
        "version": version,
        "model_file": "model.npz",
        "labels": labels,
        "input": {"size": size},
        "thresholds": dict.fromkeys(labels, 0.5),
    }
    (folder / "model.json").write_text(json.dumps(meta))
    return folder


def test_the_keras_runtime_is_an_explaining_runtime():
    from xray_spark.keras_runtime import KerasRuntime
    from xray_spark.models import build_model

    keras_runtime = KerasRuntime(build_model("small_cnn", n_labels=2, image_size=32, seed=3))
    assert isinstance(keras_runtime, ExplainingRuntime) and keras_runtime.input_shape == (32, 32, 1)
    films = np.random.default_rng(0).integers(0, 255, (3, 32, 32, 1), dtype=np.uint8)
    assert keras_runtime.predict(films).shape == (3, 2) and keras_runtime.explain(films, np.array([0, 1, 0])).ndim == 3
    assert isinstance(BrightnessRuntime(np.ones(2), 64), ExplainingRuntime)


def test_a_numpy_runtime_registers_scores_and_explains_without_tensorflow(spark, prepared, tmp_path, npz_format):
    settings, lake = copy_lake(prepared, tmp_path / "lake")
    size = prepared[0].image.size
    with pytest.raises(Exception, match="takes"):  # registration checks shapes through the runtime
        register_model(spark, lake, str(write_npz_model(tmp_path / "bad", size=size, labels=["Effusion"])), dataset="x")
    register_model(spark, lake, str(write_npz_model(tmp_path / "m", size=size)), dataset=settings.dataset)

    settings = make_settings(lake.root, "score.heatmaps=top:6")
    summary = run_scoring(spark, lake, settings, model_version="brightness-1")
    assert summary["written"] == 160 and summary["heatmaps"]["written"] >= 6
    tables.register_tables(spark, lake)
    scored = spark.table("xray.predictions").toPandas()
    store = {r["image_id"]: r["image"] for r in spark.read.parquet(lake.store_url(settings.dataset)).collect()}
    pixels = np.stack([cv2.imdecode(np.frombuffer(store[i], np.uint8), 0)[..., None] for i in scored["image_id"]])
    expected = BrightnessRuntime(np.array([1.0, -1.0]), size).predict(pixels)
    np.testing.assert_allclose(scored[[raw_score_column(x) for x in LABELS]].to_numpy(), expected, atol=1e-6)

    maps = spark.table("xray.heatmaps").toPandas()
    assert set(maps["finding"]) <= set(LABELS) and len(maps) == summary["heatmaps"]["written"]
    for _, row in maps.head(4).iterrows():
        film = cv2.imdecode(np.frombuffer(store[row["image_id"]], np.uint8), 0)[None, :, :, None]
        want = BrightnessRuntime(np.ones(2), size).explain(film, np.zeros(1, int))[0]
        stored = cv2.imdecode(np.frombuffer(row["heatmap_png"], np.uint8), 0) / 255.0
        got = cv2.resize(stored.astype(np.float32), (GRID, GRID), interpolation=cv2.INTER_AREA)
        assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.9, "the stored heatmap is the runtime's explain"


def test_a_runtime_that_cannot_explain_scores_and_draws_no_heatmaps(spark, prepared, tmp_path, monkeypatch, npz_format):
    monkeypatch.setitem(model_runtime.FORMATS, ".npz", ModelFormat(".npz", "no heatmaps", check_npz, NPZ.open))
    settings, lake = copy_lake(prepared, tmp_path / "lake")
    register_model(spark, lake, str(write_npz_model(tmp_path / "m", size=settings.image.size)), dataset="x")
    summary = run_scoring(spark, lake, make_settings(lake.root, "score.heatmaps=called"), model_version="brightness-1")
    assert summary["written"] == 160
    assert summary["heatmaps"]["written"] == 0 and "cannot explain" in summary["heatmaps"]["not_drawn"]


def test_an_unknown_format_is_refused_with_the_formats_that_are_opened(tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"\x08\x01")
    with pytest.raises(ModelRefused, match=r"not of a format this product opens: \.keras .*, \.onnx "):
        model_runtime.check_model_format(str(path))


def test_the_worker_cache_keeps_at_most_its_bound_and_drops_the_least_recently_used():
    cache = ModelCache(2)
    built = []

    def build(name):
        return lambda: built.append(name) or name

    for name in ("champion", "challenger", "champion", "third", "champion", "challenger"):
        cache.get(name, build(name))
    assert len(cache) == 2 and built == ["champion", "challenger", "third", "challenger"]
    assert model_runtime.MAX_WORKER_MODELS == model_runtime.WORKER_MODELS.max_size == 2
