"""Models from other toolkits: ONNX files with their cards, checked, registered and scored like our own."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from xray_spark.errors import ModelRefused, UsageError
from xray_spark.labels import FINDINGS, probability_column
from xray_spark.model_card import read_card
from xray_spark.model_runtime import open_runtime
from xray_spark.onnx import runtime as onnx_runtime

from .jobs import run_in_process
from .lakes import copy_lake

#: torchxrayvision's 18 output names, in its order (its models' ``pathologies``): four are none of our findings.
XRV_OUTPUTS = [
    "Atelectasis", "Consolidation", "Infiltration", "Pneumothorax", "Edema", "Emphysema", "Fibrosis", "Effusion",
    "Pneumonia", "Pleural_Thickening", "Cardiomegaly", "Nodule", "Mass", "Hernia", "Lung Lesion", "Fracture",
    "Lung Opacity", "Enlarged Cardiomediastinum",
]  # fmt: skip


def _write_card(path: Path, version: str, onnx: dict, **more) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({"version": version, "onnx": onnx, **more}))
    return path


def _export(model, out: Path) -> Path:
    """A tf_keras model as an ONNX file (tf2onnx), taking uint8 films as the Keras model does."""
    import tf2onnx

    from xray_spark.tf_quiet import import_tensorflow

    tf = import_tensorflow()
    spec = [tf.TensorSpec([None, *model.input_shape[1:]], tf.uint8, name="film")]
    tf2onnx.convert.from_keras(model, input_signature=spec, opset=17, output_path=str(out))
    return out


def _keras_to_onnx(model_dir: str, out: Path) -> Path:
    """The product's Keras model of a model folder as an ONNX file."""
    from xray_spark.models import load_model_safely

    return _export(load_model_safely(os.path.join(model_dir, "model.keras")), out)


def test_a_densenet121_exported_to_onnx_gives_the_keras_model_s_outputs_and_class_activation_maps(tmp_path, caplog):
    """The zoo's DenseNet-121 (random weights at 96 px: the export's fidelity through every layer, not learning):
    its probabilities within 1e-4 of Keras's; registration finds its last feature map and dense layer by itself, and
    the heatmaps are that map weighted by the dense layer's column, as computed from the Keras model."""
    from xray_spark.keras_runtime import KerasRuntime
    from xray_spark.models import build_model, keras

    model = build_model("densenet121", len(FINDINGS), 96)
    path = str(_export(model, tmp_path / "densenet.onnx"))
    onnx_card = {"input": "film", "output": "probabilities", "outputs": list(FINDINGS), "dtype": "uint8"}
    card = _write_card(tmp_path / "card.yaml", "densenet", {**onnx_card, "findings": {f: f for f in FINDINGS}})
    with caplog.at_level(logging.INFO, logger="xray_spark"):
        folder = onnx_runtime.model_folder(path, str(card), str(tmp_path / "folder"))
    assert "heatmaps: class activation maps of" in caplog.text, "registration says where heatmaps come from"
    cam = json.loads((tmp_path / "folder" / "model.json").read_text())["onnx"]["cam"]
    assert cam["feature_map"].endswith("densenet121/relu/Relu:0") and cam["weights"].startswith("densenet121/logits")
    onnx_model = open_runtime(read_card(folder).model_file)
    films = np.random.default_rng(3).integers(0, 256, (6, 96, 96, 1), dtype=np.uint8)
    keras_out, onnx_out = KerasRuntime(model).predict(films), onnx_model.predict(films)
    assert keras_out.std() > 1e-3, "films that the model tells apart"
    assert np.abs(keras_out - onnx_out).max() < 1e-4

    every = np.repeat(films, len(FINDINGS), axis=0)  # each film once per finding: random weights leave many empty
    findings = np.tile(np.arange(len(FINDINGS)), len(films))
    features = keras().Model(model.inputs, model.get_layer("gap").input)(every, training=False).numpy()
    weights = model.get_layer("logits").get_weights()[0][:, findings].T
    expected = np.maximum(np.einsum("nhwk,nk->nhw", features, weights), 0)
    peak = expected.reshape(len(every), -1).max(axis=1)
    assert (peak > 0).sum() >= 10, "maps with something in them"
    expected /= np.where(peak > 0, peak, 1)[:, None, None]
    got = onnx_model.explain(every, findings)
    assert got.shape == (len(every), 3, 3) and np.abs(got - expected).max() < 1e-4


def _recipe(marker: str, **values: str) -> str:
    """The python block of docs/onnx.md that holds ``marker``, its placeholders (``NAME = "/path/to/..."``) set."""
    import re

    from .conftest import ROOT
    from .test_docs_commands import fenced_blocks

    (block,) = [
        b for lang, b in fenced_blocks((ROOT / "docs" / "onnx.md").read_text()) if lang == "python" and marker in b
    ]
    for name, value in values.items():
        block, n = re.subn(rf'^{name} = "/path/to/[^"]*"', f"{name} = {value!r}", block, flags=re.M)
        assert n == 1, f"the recipe sets {name} once"
    return block


def test_the_docs_keras_recipe_exports_a_model_that_registers_and_scores_as_the_keras_model(
    spark, prepared, small_model, tmp_path
):
    """small_cnn trained here, exported to ONNX and given its card by the recipe of docs/onnx.md, run as it is: its
    outputs equal Keras's within 1e-4 on the store's films, and the scoring job writes the same calibrated
    probabilities for it as for the Keras model."""
    settings, lake = copy_lake(prepared, tmp_path / "lake")
    keras_card = read_card(small_model["model_dir"])
    labels = keras_card.labels
    exec(_recipe("tf2onnx.convert.from_keras", MODEL_DIR=small_model["model_dir"], OUT=str(tmp_path)), {})
    onnx_file, card = tmp_path / "model.onnx", tmp_path / "card.yaml"
    done = run_in_process("register_model", ["--lake", lake.root, "--model", str(onnx_file), "--card", str(card)])
    assert done.returncode == 0, done.stderr[-2000:]
    registered = json.loads(done.stdout)
    onnx_version = f"{small_model['version']}-onnx"
    assert registered["version"] == onnx_version and registered["path"].endswith(onnx_version)
    onnx_meta = read_card(registered["path"]).meta
    for key in ("calibration", "threshold_rule", "operating_points", "training_patients"):
        assert onnx_meta[key] == keras_card.meta[key], f"the exported card keeps {key}"

    films = _store_films(spark, lake, settings.dataset, 32)
    ours, theirs = open_runtime(keras_card.model_file), open_runtime(read_card(registered["path"]).model_file)
    assert np.abs(ours.predict(films) - theirs.predict(films)).max() < 1e-4

    from xray_spark.score.pipeline import run_scoring

    for version in (small_model["version"], onnx_version):
        run_scoring(spark, lake, settings, model_version=version)
    scored = spark.read.parquet(lake.table_url("predictions")).toPandas()
    columns = [probability_column(x) for x in labels]
    by_version = {v: rows.set_index("image_id")[columns].sort_index() for v, rows in scored.groupby("model_version")}
    keras_rows, onnx_rows = by_version[small_model["version"]], by_version[onnx_version]
    assert len(onnx_rows) == len(keras_rows) == spark.read.parquet(lake.store_url(settings.dataset)).count()
    assert np.abs(keras_rows.to_numpy() - onnx_rows.to_numpy()).max() < 1e-4


def _store_films(spark, lake, dataset: str, n: int) -> np.ndarray:
    """``n`` films of the store as scoring reads them: (n, size, size, 1) uint8."""
    import cv2

    rows = spark.read.parquet(lake.store_url(dataset)).select("image").limit(n).collect()
    return np.stack([cv2.imdecode(np.frombuffer(r["image"], np.uint8), 0)[..., None] for r in rows])


def _graph(path: Path, size: int = 32, *, domain: str = "", weights: np.ndarray | None = None) -> np.ndarray:
    """A hand-made ONNX graph in torchxrayvision's convention: ``img`` (N, 1, size, size) float32 in, 18 logits out,
    each ``w * mean(img) + b``. Returns (w, b) as a (2, 18) array."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(5)
    wb = np.stack([rng.normal(0, 0.01, 18), rng.normal(0, 1, 18)]).astype(np.float32) if weights is None else weights
    nodes = [
        helper.make_node("ReduceMean", ["img"], ["mean"], axes=[1, 2, 3], keepdims=1, domain=domain),
        helper.make_node("Reshape", ["mean", "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["scaled"]),
        helper.make_node("Add", ["scaled", "b"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "xrv-like",
        [helper.make_tensor_value_info("img", TensorProto.FLOAT, ["N", 1, size, size])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 18])],
        [
            numpy_helper.from_array(np.array([-1, 1], np.int64), "shape"),
            numpy_helper.from_array(wb[:1], "w"),
            numpy_helper.from_array(wb[1], "b"),
        ],
    )
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    onnx.save(model, str(path))
    return wb


XRV_CARD = {
    "input": "img",
    "output": "out",
    "outputs": XRV_OUTPUTS,
    "findings": {name: name for name in XRV_OUTPUTS if name in FINDINGS},
    "layout": "NCHW",
    "scaling": "range",
    "low": -1024.0,
    "high": 1024.0,
    "activation": "logits",
}


def test_a_card_maps_torchxrayvision_s_eighteen_outputs_onto_our_fourteen_in_our_order(tmp_path):
    wb = _graph(tmp_path / "xrv.onnx")
    folder = onnx_runtime.model_folder(
        str(tmp_path / "xrv.onnx"), str(_write_card(tmp_path / "card.yaml", "xrv-like", XRV_CARD)), str(tmp_path / "m")
    )
    card = read_card(folder)
    assert card.labels == list(FINDINGS) and card.size == 32, "ours only, in our order, the size read from the graph"
    films = np.random.default_rng(1).integers(0, 256, (5, 32, 32, 1), dtype=np.uint8)
    got = open_runtime(card.model_file).predict(films)
    scaled = -1024.0 + films.astype(np.float64) * (2048.0 / 255.0)
    logits = scaled.reshape(5, -1).mean(axis=1, keepdims=True) * wb[0][None, :] + wb[1][None, :]
    expected = 1 / (1 + np.exp(-logits[:, [XRV_OUTPUTS.index(f) for f in FINDINGS]]))
    assert got.shape == (5, 14) and np.abs(got - expected).max() < 1e-5


def test_the_docs_torchxrayvision_recipe_writes_a_card_that_registers_the_model_s_trained_outputs(tmp_path, caplog):
    """The card block of docs/onnx.md's torchxrayvision recipe, run with a stand-in for the model (its pathologies
    with "" where it did not train, its operating thresholds with NaN there): the card registers with a graph in
    torchxrayvision's convention and scores the findings it trained, in our order, with its thresholds."""
    from types import SimpleNamespace

    wb = _graph(tmp_path / "xrv.onnx")
    untrained = {"Consolidation", "Hernia", "Lung Opacity"}
    pathologies = ["" if name in untrained else name for name in XRV_OUTPUTS]
    op_threshs = [float("nan") if not p else 0.01 * (i + 1) for i, p in enumerate(pathologies)]
    model = SimpleNamespace(pathologies=pathologies)
    exec(_recipe("xray_spark.labels", OUT=str(tmp_path)), {"model": model, "op_threshs": op_threshs})
    with caplog.at_level(logging.INFO, logger="xray_spark"):
        folder = onnx_runtime.model_folder(
            str(tmp_path / "xrv.onnx"), str(tmp_path / "xrv-densenet121-nih.yaml"), str(tmp_path / "m")
        )
    card = read_card(folder)
    expected_labels = [f for f in FINDINGS if f in XRV_OUTPUTS and f not in untrained]
    assert card.labels == expected_labels and card.version == "xrv-densenet121-nih"
    assert card.thresholds == {f: 0.01 * (XRV_OUTPUTS.index(f) + 1) for f in expected_labels}
    assert card.meta["onnx"]["cam"] is None, "a mean of the whole input is no pooled feature map: occlusion"
    assert "heatmaps: by occlusion, 65 forward passes a film (no global pooling then dense layer found)" in caplog.text
    films = np.random.default_rng(4).integers(0, 256, (3, 32, 32, 1), dtype=np.uint8)
    scaled = -1024.0 + films.astype(np.float64) * (2048.0 / 255.0)
    logits = scaled.reshape(3, -1).mean(axis=1, keepdims=True) * wb[0][None, :] + wb[1][None, :]
    expected = 1 / (1 + np.exp(-logits[:, [XRV_OUTPUTS.index(f) for f in expected_labels]]))
    assert np.abs(open_runtime(card.model_file).predict(films) - expected).max() < 1e-5


def _refused(tmp_path: Path, onnx_card: dict, model: Path) -> str:
    card = _write_card(tmp_path / "card.yaml", "refused", onnx_card)
    with pytest.raises((ModelRefused, UsageError)) as caught:
        onnx_runtime.model_folder(str(model), str(card), str(tmp_path / "folder"))
    message = str(caught.value)
    assert "\n" not in message and not (tmp_path / "folder" / "model.json").exists()
    return message


def test_what_is_refused_is_one_line_and_no_model_folder(tmp_path, monkeypatch):
    model = tmp_path / "xrv.onnx"
    _graph(model)
    assert "has no input 'x'" in _refused(tmp_path, {**XRV_CARD, "input": "x"}, model)
    assert "3 channel(s)" in _refused(tmp_path, {**XRV_CARD, "channels": 3}, model)
    assert "maps onto unknown findings" in _refused(tmp_path, {**XRV_CARD, "findings": {"Fracture": "Fracture"}}, model)
    unknown_map = {**XRV_CARD, "cam": {"feature_map": "features", "weights": "w"}}
    assert "onnx.cam.feature_map 'features' is no tensor" in _refused(tmp_path, unknown_map, model)
    not_weights = {**XRV_CARD, "cam": {"feature_map": "mean", "weights": "shape"}}
    assert "no two-dimensional weight" in _refused(tmp_path, not_weights, model)
    bad_pools = {**XRV_CARD, "cam": {"feature_map": "mean", "weights": "shape", "pools": ["median"]}}
    assert "pools lists average or max" in _refused(tmp_path, bad_pools, model)
    custom = tmp_path / "custom.onnx"
    _graph(custom, domain="com.example.ops")
    assert "custom domain 'com.example.ops'" in _refused(tmp_path, XRV_CARD, custom)
    outside = _external_weights_outside(tmp_path)
    assert "outside its folder" in _refused(tmp_path, XRV_CARD, outside)
    monkeypatch.setattr(onnx_runtime, "MAX_BYTES", 200)
    assert "over the 200 opened" in _refused(tmp_path, XRV_CARD, model)


def _external_weights_outside(tmp_path: Path) -> Path:
    """A graph whose weights are in a file one folder up from it."""
    import onnx

    inner = tmp_path / "inner"
    inner.mkdir()
    _graph(inner / "big.onnx")
    model = onnx.load(str(inner / "big.onnx"))
    onnx.save_model(model, str(inner / "big.onnx"), save_as_external_data=True, location="w.bin", size_threshold=0)
    shutil.move(str(inner / "w.bin"), str(tmp_path / "w.bin"))
    model = onnx.load(str(inner / "big.onnx"), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../w.bin"
    onnx.save_model(model, str(inner / "big.onnx"))
    return inner / "big.onnx"


@pytest.fixture(scope="module")
def learned_onnx(spark, trained, tmp_path_factory) -> str:
    """The learning set's small_cnn (tests/learning.py) exported to ONNX and registered in the module's learning lake
    with its card (its thresholds and calibration) twice: ``learned-onnx``, whose heatmaps are class activation maps
    found by registration, and ``learned-onnx-occlusion``, whose card says ``cam: none``."""
    from xray_spark.registry import register_model

    _, lake, summary = trained
    root = tmp_path_factory.mktemp("learned-onnx")
    keras_card = read_card(summary["model_dir"])
    labels = keras_card.labels
    onnx_card = {"input": "film", "output": "probabilities", "outputs": labels, "findings": {x: x for x in labels}}
    onnx_file = _keras_to_onnx(summary["model_dir"], root / "learned.onnx")
    for version, cam in (("learned-onnx", "auto"), ("learned-onnx-occlusion", "none")):
        card = _write_card(
            root / f"{version}.yaml",
            version,
            {**onnx_card, "dtype": "uint8", "cam": cam},
            thresholds=keras_card.meta.get("thresholds"),
            calibration=keras_card.meta.get("calibration"),
            dataset=keras_card.dataset,
        )
        folder = onnx_runtime.model_folder(str(onnx_file), str(card), str(root / version))
        register_model(spark, lake, folder, dataset=str(keras_card.dataset))
    return "learned-onnx"


@pytest.mark.parametrize("how", ["cam", "occlusion"])
def test_heatmaps_of_the_learning_model_exported_to_onnx_point_at_the_planted_lesions(
    spark, trained, learned_onnx, how
):
    """The scoring job draws the ONNX model's heatmaps, as class activation maps from the feature map that its
    average and maximum poolings read (found by registration), or by occlusion, and they point at the planted
    lesions of the validation films (the pointing game, as Grad-CAM's in test_train) far above another film's
    heatmap."""
    import dataclasses

    from xray_spark.evaluate.pipeline import localize
    from xray_spark.registry import resolve_model
    from xray_spark.score.pipeline import run_scoring

    from .learning import pooled_pointing

    settings, lake, _ = trained
    version = learned_onnx if how == "cam" else f"{learned_onnx}-occlusion"
    card = resolve_model(spark, lake, version=version)
    assert bool(card.meta["onnx"]["cam"]) == (how == "cam"), card.meta["onnx"]
    called = dataclasses.replace(settings, score=dataclasses.replace(settings.score, heatmaps="called"))
    scored = run_scoring(spark, lake, called, model_version=version, new_only=True)
    assert scored["heatmaps"]["written"] > 0
    located = localize(spark, lake, card, "val", settings.dataset, seed=0)
    pooled, report = pooled_pointing(located)
    print(pooled, report)
    assert pooled["pointing_tolerant"] >= 0.7 and pooled["pointing_tolerant"] - pooled["shuffled"] > 0.3, report


def test_an_int8_copy_is_a_new_version_naming_its_parent_and_ranks_the_films_as_its_parent(
    spark, trained, learned_onnx
):
    """quantize (static, calibrated on validation films): a registered version whose card names its parent, a
    quarter of its size, whose mean AUROC on the validation films is its parent's within 0.005 (each finding's
    within 0.05: a finding with a handful of positives moves by a rank); dynamic too."""
    from sklearn.metrics import roc_auc_score

    from xray_spark.jobs.quantize import validation_films
    from xray_spark.lake.schema import decode_labels
    from xray_spark.registry import resolve_model

    settings, lake, _ = trained
    done = run_in_process(
        "quantize", ["--lake", lake.root, "--model-version", learned_onnx, "--calibration-films", "64"]
    )
    assert done.returncode == 0, done.stderr[-2000:]
    made = json.loads(done.stdout)
    assert (made["version"], made["parent"], made["method"]) == ("learned-onnx-int8", learned_onnx, "static")
    assert made["bytes"] < made["parent_bytes"] / 2.5, made
    copy, parent = resolve_model(spark, lake, version=made["version"]), resolve_model(spark, lake, version=learned_onnx)
    assert copy.meta["parent"] == learned_onnx and copy.labels == parent.labels
    rows = spark.read.parquet(lake.store_url(settings.dataset)).where("split = 'val'").orderBy("image_id").collect()
    films = validation_films(spark, lake, settings.dataset, len(rows))
    truth = np.stack([decode_labels(r["labels"]) for r in rows])
    aurocs = {}
    for card in (parent, copy):
        p = open_runtime(card.model_file).predict(films)
        aurocs[card.version] = [
            roc_auc_score(truth[:, j], p[:, j]) for j in range(p.shape[1]) if 0 < truth[:, j].sum() < len(truth)
        ]
    gap = np.subtract(*aurocs.values())
    assert abs(gap.mean()) < 0.005 and np.abs(gap).max() < 0.05, aurocs
    assert np.mean(aurocs[parent.version]) > 0.75, aurocs
    dynamic = run_in_process("quantize", ["--lake", lake.root, "--model-version", learned_onnx, "--method", "dynamic"])
    assert dynamic.returncode == 0 and json.loads(dynamic.stdout)["version"] == "learned-onnx-int8-dynamic"

    # Its heatmaps: the class activation maps of its own (dequantized) dense weights, on the parent's feature map.
    assert copy.meta["onnx"]["cam"]["feature_map"] == parent.meta["onnx"]["cam"]["feature_map"]
    assert copy.meta["onnx"]["cam"]["weights"] != parent.meta["onnx"]["cam"]["weights"], "the int8 weights'"
    findings = np.zeros(len(films), int)
    maps = [open_runtime(card.model_file).explain(films, findings).reshape(len(films), -1) for card in (parent, copy)]
    agreement = [np.corrcoef(a, b)[0, 1] for a, b in zip(*maps, strict=True) if a.std() > 0 and b.std() > 0]
    assert len(agreement) > len(films) // 2 and np.median(agreement) > 0.9, agreement


def test_the_challenge_decides_whether_an_int8_copy_may_replace_its_parent(spark, trained, learned_onnx, tmp_path):
    """The paired test, unchanged, on the int8 copy against its parent (in a copy of the learning lake, since a PASS
    promotes it): both score the held-out films, each finding compared has its difference inside its interval, the
    mean difference is within 0.005, and promote --if-passed follows the outcome."""
    _, lake = copy_lake(trained, tmp_path / "lake")
    made = run_in_process("quantize", ["--lake", lake.root, "--model-version", learned_onnx, "--version", "int8-c"])
    assert made.returncode == 0, made.stderr[-2000:]
    on_val = ["--set", "promotion.split=val"]  # the learning set has no test films
    done = run_in_process(
        "challenge", ["--lake", lake.root, "--challenger", "int8-c", "--champion", learned_onnx, *on_val]
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    compared = [row for row in summary["findings"] if not np.isnan(row["difference"] or np.nan)]
    print(summary["outcome"], [(r["finding"], round(r["difference"], 4)) for r in compared])
    differences = [row["difference"] for row in compared]
    assert len(compared) >= 3 and abs(np.mean(differences)) < 0.005 and max(map(abs, differences)) < 0.05, compared
    assert all(row["delong_low"] <= row["difference"] <= row["delong_high"] for row in compared)
    promoted = run_in_process("promote", ["--lake", lake.root, "--if-passed", summary["challenge_id"]])
    assert (promoted.returncode == 0) == (summary["outcome"] == "PASS"), (summary["outcome"], promoted.stderr[-500:])
    from xray_spark.registry import alias_holder

    holder = (alias_holder(spark, lake) or {}).get("version")
    assert (holder == "int8-c") == (summary["outcome"] == "PASS"), holder


def test_class_maps_place_a_maximum_poolings_share_where_its_channel_peaks():
    """A 2 x 2 map of three channels, the first weighted, pooled by average (weight 4) and by maximum (weight 1):
    the average's share is the channel itself (4 * F / 4), the maximum's adds 3 at its peak. Read as two averages it
    would be 1.25 * F instead."""
    from xray_spark.onnx.cam import class_maps

    features = np.zeros((1, 2, 2, 3))  # (n, h, w, k)
    features[0, :, :, 0] = [[1.0, 0.0], [0.0, 3.0]]
    features[0, :, :, 1:] = 5.0  # channels the finding's weights ignore
    weights = np.array([[4.0], [0.0], [0.0], [1.0], [0.0], [0.0]])  # the average block, then the maximum's
    split = class_maps(features, weights, np.array([0]), ["average", "max"])
    assert np.allclose(split[0], [[1 / 6, 0], [0, 1]])
    assert np.allclose(class_maps(features, weights, np.array([0]))[0], [[1 / 3, 0], [0, 1]])
    with pytest.raises(ValueError, match="1 pooling kinds for a dense layer of 2 blocks of 3"):
        class_maps(features, weights, np.array([0]), ["average"])


def test_batch_normalization_rewritten_as_multiply_and_add_computes_the_same(tmp_path):
    """quantize's pre-pass: a normalization no convolution can absorb (after a concatenation, before a ReLU, as in
    DenseNet) becomes Mul and Add with the same outputs, and the statistics it replaced leave the graph."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from xray_spark.onnx.quantize import affine_batch_norms

    rng = np.random.default_rng(2)
    stats = [rng.uniform(0.5, 2, 4), rng.normal(0, 1, 4), rng.normal(0, 1, 4), rng.uniform(0.1, 3, 4)]
    graph = helper.make_graph(
        [
            helper.make_node("Concat", ["x", "x"], ["both"], axis=1),
            helper.make_node("BatchNormalization", ["both", "g", "b", "m", "v"], ["normed"], epsilon=1e-3),
            helper.make_node("Relu", ["normed"], ["y"]),
        ],
        "dense-block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 5, 5])],
        [numpy_helper.from_array(a.astype(np.float32), n) for a, n in zip(stats, "gbmv", strict=True)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    model = onnx.shape_inference.infer_shapes(model)
    before, after = tmp_path / "bn.onnx", tmp_path / "affine.onnx"
    onnx.save(model, str(before))
    assert affine_batch_norms(str(before), str(after)) == 1
    rewritten = onnx.load(str(after))
    assert [n.op_type for n in rewritten.graph.node] == ["Concat", "Mul", "Add", "Relu"]
    assert not {"g", "b", "m", "v"} & {t.name for t in rewritten.graph.initializer}
    x = {"x": rng.normal(0, 2, (3, 2, 5, 5)).astype(np.float32)}
    run = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, x)[0] for p in (before, after)]
    assert np.abs(run[0] - run[1]).max() < 1e-5 and run[0].max() > 0
