"""A model file never runs code: formats refused, archives checked unopened, digests verified, labels checked."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from xray_spark import model_card, registry
from xray_spark.errors import ModelRefused, UsageError
from xray_spark.lake import Lake
from xray_spark.score.pipeline import run_scoring

from .lakes import copy_lake


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
    _, lake = copy_lake(prepared, tmp_path / "lake")
    folder = Path(lake.root) / "models" / small_model["version"]
    registry.resolve_model(spark, lake, version=small_model["version"])  # as trained: accepted
    data = bytearray((folder / "model.keras").read_bytes())
    data[-100] ^= 0xFF
    (folder / "model.keras").write_bytes(bytes(data))
    with pytest.raises(ModelRefused, match=r"model.keras of model .* does not match the SHA-256 recorded"):
        registry.resolve_model(spark, lake, version=small_model["version"])


def test_a_model_trained_elsewhere_is_registered_then_accepted(spark, prepared, small_model, tmp_path):
    _, lake = copy_lake(prepared, tmp_path / "lake")
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
    _, lake = copy_lake(prepared, tmp_path / "lake")
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(small_model["model_dir"], elsewhere)
    meta = json.loads((elsewhere / "model.json").read_text())
    (elsewhere / "model.json").write_text(json.dumps(meta | {"version": "bomb-1"}))
    _with_extra_entry(elsewhere, name, size)
    with pytest.raises(ModelRefused, match=re.escape(said)):
        registry.register_model(spark, lake, str(elsewhere), dataset="nih")
    assert not (Path(lake.root) / "models" / "bomb-1").exists(), "nothing was registered"


def test_a_model_of_another_image_size_is_one_line_before_any_task(spark, prepared, small_model, tmp_path):
    settings, lake = copy_lake(prepared, tmp_path / "lake")
    manifest_path = Path(lake.root) / "petastorm" / "nih" / "_xray_store.json"
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps(manifest | {"image_size": 96}))
    with pytest.raises(UsageError, match=r"takes 64 px images and the store holds 96 px images") as info:
        run_scoring(spark, lake, settings, model_version=small_model["version"])
    assert "\n" not in str(info.value)
    assert not (Path(lake.root) / "tables" / "_staging").exists(), "refused before the scoring stage started"
    assert not (Path(lake.root) / "locks").exists(), "refused before the run took its lock"


@pytest.mark.parametrize("labels", [["Alien", "Mass"], [], ["Mass", "Mass"]])
def test_a_model_with_unusable_labels_is_refused_at_registration(spark, prepared, small_model, tmp_path, labels):
    _, lake = copy_lake(prepared, tmp_path / "lake")
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(small_model["model_dir"], elsewhere)
    meta = json.loads((elsewhere / "model.json").read_text())
    (elsewhere / "model.json").write_text(json.dumps(meta | {"version": "odd-labels-1", "labels": labels}))
    with pytest.raises(UsageError, match=r"its labels must be distinct findings of Atelectasis, "):
        registry.register_model(spark, lake, str(elsewhere), dataset="nih")
    assert not (Path(lake.root) / "models" / "odd-labels-1").exists()
