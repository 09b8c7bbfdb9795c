"""The score job: the UDF's probabilities, a run killed half-way, model versions, the views over predictions."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import pytest
from pyspark.sql import functions as F

from xray_spark.errors import UsageError
from xray_spark.labels import raw_score_column
from xray_spark.lake import Lake, tables
from xray_spark.lake.schema import predictions_schema
from xray_spark.model_card import digests, read_card
from xray_spark.operating import calibrate
from xray_spark.registry import resolve_model, set_alias
from xray_spark.score import pipeline as scoring
from xray_spark.score import udf
from xray_spark.score.run import ScoreRun
from xray_spark.score.runtime import decode_pngs
from xray_spark.session import temporary_conf

from .jobs import kill_when
from .lakes import own_scoring_lake


def _predictions(spark, lake: Lake):
    tables.register_tables(spark, lake)
    return spark.table("xray.predictions")


@pytest.fixture(scope="module")
def scored_lake(spark, prepared, small_model, tmp_path_factory):
    return own_scoring_lake(prepared, small_model, tmp_path_factory.mktemp("scorelake"))


def test_udf_predictions_equal_the_models_own_predict(spark, scored_lake, small_model):
    settings, lake = scored_lake
    card = resolve_model(spark, lake, path=small_model["model_dir"])
    rows = scoring.studies_to_score(spark, lake, settings.dataset, card.version, new_only=False)
    # Arrow batches of 9 rows, model batches of 7: the UDF decodes each batch while the one
    # before it is predicted, so every row must still come back with its own image's scores.
    with temporary_conf(spark, "spark.sql.execution.arrow.maxRecordsPerBatch", "9"):
        out = udf.score_frame(
            rows, ScoreRun("t", settings.dataset, card, dt.datetime(2026, 1, 1)), batch_size=7
        ).collect()
    from xray_spark.models import load_model_safely
    from xray_spark.train.data import ShardSpec, read_arrays

    model = load_model_safely(card.model_file)
    labels = card.labels
    raw_cols = [raw_score_column(x) for x in labels]
    by_id = {r["image_id"]: np.array([r[c] for c in raw_cols]) for r in out}
    assert len(by_id) == 160
    for split in ("train", "val", "test"):
        arrays = read_arrays(lake.store_url(settings.dataset), ShardSpec(split))
        expected = model.predict(arrays["images"], verbose=0)
        got = np.stack([by_id[i] for i in arrays["ids"]])
        np.testing.assert_allclose(got, expected, atol=1e-5)
    thresholds = card.meta["thresholds"]
    assert card.calibration, "the small model's findings with enough validation positives are calibrated"
    for row in out[:20]:
        probs = [row[c] for c in udf.prediction_columns(labels)]
        for x, p, raw in zip(labels, probs, (row[c] for c in raw_cols), strict=True):
            fitted = card.calibration.get(x)
            assert p == pytest.approx(float(calibrate(np.array([raw]), *fitted)[0]) if fitted else raw, abs=1e-5)
        assert row["top_finding"] == labels[int(np.argmax(probs))]
        assert row["top_probability"] == pytest.approx(max(probs))
        # At float precision, as the table stores probabilities: a calibrated probability is
        # often exactly a threshold (both are values of the same step function).
        limits = {x: None if t is None else np.float32(t) for x, t in thresholds.items()}
        called = [x for x, p in zip(labels, probs, strict=True) if limits[x] is not None and np.float32(p) >= limits[x]]
        assert row["called"] == called


def test_another_model_runtime_is_one_loader(spark, scored_lake, small_model):
    """The scoring UDF takes a model loader (as ``predict_batch_udf`` takes ``make_predict_fn``): here one that
    needs no TensorFlow, whose "probability" of every finding is the film's mean grey level."""
    settings, lake = scored_lake
    card = resolve_model(spark, lake, path=small_model["model_dir"])
    rows = scoring.studies_to_score(spark, lake, settings.dataset, card.version, new_only=False).limit(24)
    loaded = []

    def mean_grey_loader(ref):
        loaded.append(ref)  # runs on the worker: the driver's list stays empty
        return lambda pixels: np.repeat(
            pixels.reshape(len(pixels), -1).mean(axis=1, keepdims=True) / 255, ref.n_labels, 1
        )

    run = ScoreRun("t", settings.dataset, card, dt.datetime(2026, 1, 1))
    out = udf.score_frame(rows, run, batch_size=5, make_predict_fn=mean_grey_loader).collect()
    images = {r["image_id"]: r["image"] for r in rows.collect()}
    assert len(out) == 24 and not loaded
    for row in out:
        grey = decode_pngs(pd.Series([images[row["image_id"]]]), card.size).mean() / 255
        assert [row[raw_score_column(x)] for x in card.labels] == pytest.approx([grey] * len(card.labels), abs=1e-6)


def test_a_run_that_dies_half_way_leaves_nothing_and_the_rerun_scores_each_study_once(spark, scored_lake, small_model):
    settings, lake = scored_lake
    card = resolve_model(spark, lake, path=small_model["model_dir"])
    rows = scoring.studies_to_score(spark, lake, settings.dataset, card.version, new_only=True)
    poison = rows.limit(1).withColumn("image_id", F.lit("poison")).withColumn("image", F.lit(b"not a png"))
    dying = udf.score_frame(
        rows.union(poison).repartition(4),
        ScoreRun("dying-run", settings.dataset, card, dt.datetime(2026, 1, 1)),
        batch_size=16,
    )
    with pytest.raises(Exception, match=r"poison|NoneType|astype|Python"):
        scoring.publish_run(dying, lake, score_date="2026-01-01", run_id="dying-run")
    assert not (Path(lake.root) / "tables" / "predictions").exists() or not list(
        (Path(lake.root) / "tables" / "predictions").rglob("run_id=dying-run")
    )
    first = scoring.run_scoring(spark, lake, settings, model_path=small_model["model_dir"], new_only=True)
    assert first["written"] == 160
    again = scoring.run_scoring(spark, lake, settings, model_path=small_model["model_dir"], new_only=True)
    assert again["to_score"] == 0 and again["written"] == 0 and again["already_scored"] == 160
    counts = _predictions(spark, lake).groupBy("image_id").count()
    assert counts.count() == 160 and counts.where("count > 1").count() == 0


def test_a_second_model_version_adds_its_own_rows(spark, scored_lake, small_model):
    settings, lake = scored_lake
    scoring.run_scoring(spark, lake, settings, model_path=small_model["model_dir"], new_only=True)
    # A second version: the same network saved under another version name, registered later.
    second = Path(lake.root) / "models" / "second-version"
    shutil.copytree(small_model["model_dir"], second, dirs_exist_ok=True)
    meta = json.loads((second / "model.json").read_text())
    meta["version"] = "second-version"
    (second / "model.json").write_text(json.dumps(meta))
    rows = [
        {
            "version": v,
            "created": c,
            "path": str(Path(lake.root) / "models" / v),
            "model": "small_cnn",
            "dataset": settings.dataset,
            "labels": meta["labels"],
            "image_size": 64,
            "val_auroc_mean": 0.5,
            "best_epoch": 1,
            "num_workers": 1,
            **digests(read_card(str(Path(lake.root) / "models" / v))),
        }
        for v, c in ((small_model["version"], "2026-01-01T00:00:00Z"), ("second-version", "2026-02-01T00:00:00Z"))
    ]
    from xray_spark.lake import catalog

    tables.write_table(spark.createDataFrame(rows, catalog.schema("models")), lake, "models", mode="overwrite")
    assert resolve_model(spark, lake).version == "second-version"  # no champion: the newest
    # A champion: a newer model changes nothing until it is promoted.
    set_alias(spark, lake, small_model["version"], reason="the first")
    assert resolve_model(spark, lake).version == small_model["version"]
    summary = scoring.run_scoring(spark, lake, settings, new_only=True)
    assert summary["model_version"] == small_model["version"] and summary["written"] == 0
    set_alias(spark, lake, "second-version", reason="better on the test split")
    summary = scoring.run_scoring(spark, lake, settings, new_only=True)
    assert summary["model_version"] == "second-version" and summary["written"] == 160
    by_version = {
        r["model_version"]: r["count"] for r in _predictions(spark, lake).groupBy("model_version").count().collect()
    }
    assert by_version == {small_model["version"]: 160, "second-version": 160}

    def shown() -> set[str]:
        latest = spark.table("xray.latest_predictions")
        assert latest.count() == 160
        return {r["model_version"] for r in latest.select("model_version").distinct().collect()}

    assert shown() == {"second-version"}
    set_alias(spark, lake, small_model["version"], reason="roll back")  # the older one, again
    assert shown() == {small_model["version"]}
    worklist = {r["model_version"] for r in spark.table("xray.worklist").select("model_version").collect()}
    assert worklist == {small_model["version"]}
    history = [r["version"] for r in spark.table("xray.model_aliases").orderBy("set_at").collect()]
    assert history == [small_model["version"], "second-version", small_model["version"]]
    with pytest.raises(UsageError, match="not registered"):
        set_alias(spark, lake, "no-such-version")


def test_parquet_output_reads_the_same_without_spark(spark, scored_lake, small_model):
    settings, lake = scored_lake
    scoring.run_scoring(spark, lake, settings, model_path=small_model["model_dir"], new_only=True)
    table = pads.dataset(lake.path("tables", "predictions"), format="parquet", partitioning="hive").to_table()
    frame = table.to_pandas()
    spark_rows = _predictions(spark, lake).select("image_id", "model_version", "p_nodule", "score_date").collect()
    ours = sorted(
        (r["image_id"], r["model_version"], round(float(r["p_nodule"]), 6), str(r["score_date"])) for r in spark_rows
    )
    theirs = sorted(
        (r.image_id, r.model_version, round(float(r.p_nodule), 6), str(r.score_date)) for r in frame.itertuples()
    )
    assert ours == theirs and len(ours) >= 160


def test_corrupt_or_missing_model_is_one_clear_error(spark, scored_lake, small_model, tmp_path):
    _, lake = scored_lake
    broken = tmp_path / "broken"
    shutil.copytree(small_model["model_dir"], broken)
    (broken / "model.keras").write_bytes(b"this is not a model")
    with pytest.raises(UsageError, match=r"model file .*model.keras cannot be loaded: it is not a .keras \(zip\)"):
        resolve_model(spark, lake, path=str(broken))
    (broken / "model.keras").unlink()
    with pytest.raises(UsageError, match=r"model file .*model.keras is missing"):
        resolve_model(spark, lake, path=str(broken))
    with pytest.raises(UsageError, match=r"has no model\.json"):
        resolve_model(spark, lake, path=str(tmp_path))


def test_views_do_what_they_promise(spark, tmp_path):
    lake = Lake.at(str(tmp_path))
    from xray_spark.lake import catalog

    models = [
        {
            "version": v,
            "created": c,
            "path": "-",
            "model": "small_cnn",
            "dataset": "d",
            "labels": ["Mass", "Nodule"],
            "image_size": 64,
            "val_auroc_mean": 0.9,
            "best_epoch": 1,
            "num_workers": 1,
            "model_sha256": None,  # the views never load a model
            "meta_sha256": None,
        }
        for v, c in (("old", "2026-01-01T00:00:00Z"), ("new", "2026-03-01T00:00:00Z"))
    ]
    tables.write_table(spark.createDataFrame(models, catalog.schema("models")), lake, "models", mode="overwrite")
    schema = predictions_schema(["Mass", "Nodule"])

    def row(image, patient, fu, version, date, mass, nodule):
        top = "Mass" if mass >= nodule else "Nodule"
        return (
            {
                "image_id": image,
                "patient_id": patient,
                "follow_up": fu,
                "view": "PA",
                "dataset": "d",
                "model_version": version,
                "scored_at": dt.datetime.fromisoformat(date),
                "p_mass": mass,
                "p_nodule": nodule,
                "top_finding": top,
                "top_probability": max(mass, nodule),
                "called": [x for x, p in (("Mass", mass), ("Nodule", nodule)) if p >= 0.5],
                "risk_score": max(0.8 * mass, 0.6 * nodule),
                "risk_finding": "Mass" if 0.8 * mass >= 0.6 * nodule else "Nodule",
            },
            date[:10],
        )

    runs = {
        ("2026-01-02", "r1"): [
            row("a0", 1, 0, "old", "2026-01-02 01:00:00", 0.1, 0.2),
            row("a1", 1, 1, "old", "2026-01-02 01:00:00", 0.9, 0.2),
            row("b0", 2, 0, "old", "2026-01-02 01:00:00", 0.3, 0.3),
        ],
        ("2026-03-02", "r2"): [
            row("a0", 1, 0, "new", "2026-03-02 01:00:00", 0.2, 0.1),
            row("a1", 1, 1, "new", "2026-03-02 01:00:00", 0.7, 0.15),
            row("c0", 3, 0, "new", "2026-03-02 01:00:00", 0.95, 0.6),
            row("d0", 4, 0, "new", "2026-03-02 01:00:00", 0.55, 0.55),  # two findings called, less risk than a1
        ],
    }
    for (date, run), items in runs.items():
        df = spark.createDataFrame([r for r, _ in items], schema)
        df.write.parquet("file://" + lake.path("tables", "predictions", f"score_date={date}", f"run_id={run}"))
    tables.register_tables(spark, lake)
    latest = {r["image_id"]: r["model_version"] for r in spark.table("xray.latest_predictions").collect()}
    assert latest == {"a0": "new", "a1": "new", "b0": "old", "c0": "new", "d0": "new"}
    worklist = spark.sql("SELECT * FROM xray.worklist ORDER BY risk_rank").collect()
    # by risk (urgency x probability), not by the number of findings called
    assert [(r["risk_rank"], r["image_id"]) for r in worklist] == [(1, "c0"), (2, "a1"), (3, "d0"), (4, "a0")]
    assert (
        worklist[0]["called_probabilities"] == "Mass 0.95, Nodule 0.60"
        and worklist[0]["called"] == ["Mass", "Nodule"]
        and worklist[0]["risk_finding"] == "Mass"
    )
    assert (
        worklist[3]["called_probabilities"] == ""
        and worklist[3]["called"] == []
        and worklist[2]["risk_score"] == pytest.approx(0.44)
    )
    prog = {(r["patient_id"], r["finding"], r["follow_up"]): r for r in spark.table("xray.progression").collect()}
    mass = prog[(1, "Mass", 1)]
    assert mass["previous_follow_up"] == 0
    assert mass["change"] == pytest.approx(0.5) and mass["rising"] is True
    assert prog[(1, "Nodule", 1)]["change"] == pytest.approx(0.05) and prog[(1, "Nodule", 1)]["rising"] is False
    assert prog[(1, "Mass", 0)]["change"] is None and prog[(1, "Mass", 0)]["rising"] is False


def test_sql_output_formats(spark, scored_lake, small_model):
    settings, lake = scored_lake
    scoring.run_scoring(spark, lake, settings, model_path=small_model["model_dir"], new_only=True)
    tables.register_tables(spark, lake)
    from xray_spark.readonly import query_text

    q = "SELECT image_id, top_probability FROM xray.worklist ORDER BY risk_rank LIMIT 3"
    csv_text = query_text(spark, q, fmt="csv")
    assert csv_text.splitlines()[0] == "image_id,top_probability" and len(csv_text.splitlines()) == 4
    assert all(
        set(json.loads(line)) == {"image_id", "top_probability"}
        for line in query_text(spark, q, fmt="json").splitlines()
    )
    with pytest.raises(UsageError, match="query failed"):
        query_text(spark, "SELECT * FROM xray.nope")


def test_scoring_an_empty_store_is_a_clear_error(spark, prepared, tmp_path, small_model):
    shutil.copytree(Path(prepared[1].root) / "tables" / "models", tmp_path / "tables" / "models")
    lake = Lake.at(str(tmp_path))
    with pytest.raises(UsageError, match="no training store"):
        scoring.run_scoring(spark, lake, prepared[0], model_path=small_model["model_dir"])


def test_a_killed_scoring_job_leaves_no_rows_and_the_rerun_completes(spark, prepared, small_model, tmp_path):
    """SIGKILL the score job while its run is in staging: nothing visible; the rerun scores each study once."""
    _, base, _ = prepared
    root = tmp_path / "lake"
    root.mkdir()
    os.symlink(Path(base.root) / "petastorm", root / "petastorm")
    shutil.copytree(Path(base.root) / "tables" / "models", root / "tables" / "models")
    staging = root / "tables" / "_staging" / "predictions"
    args = ["--lake", root, "--model", small_model["model_dir"], "--new-only", "--batch-size", "1"]
    kill_when(
        "score",
        [*args, "--set", "spark.driver_memory=1g"],
        lambda: staging.exists() and any(staging.iterdir()),
        timeout=240,
        what="its staging folder",
    )
    published = root / "tables" / "predictions"
    assert not published.exists() or not list(published.rglob("*.parquet")), "a killed run left visible rows"
    lake = Lake.at(str(root))
    summary = scoring.run_scoring(spark, lake, prepared[0], model_path=small_model["model_dir"], new_only=True)
    assert summary["written"] == 160 and summary["stale_staging_removed"] == []
    counts = _predictions(spark, lake).groupBy("image_id").count()
    assert counts.count() == 160 and counts.where("count > 1").count() == 0


def test_scoring_reads_the_stores_own_files_in_splits_and_shuffles_no_film(spark, scored_lake, small_model, tmp_path):
    # Eight files of 100 rows of 20 kB "films": cut for four tasks, the read gives four partitions.
    films = pd.DataFrame({"image_id": [f"i{k}" for k in range(800)], "image": [os.urandom(20_000) for _ in range(800)]})
    folder = tmp_path / "store"
    folder.mkdir()
    for k in range(8):
        films.iloc[k * 100 : (k + 1) * 100].to_parquet(folder / f"part-{k}.parquet")
    split = scoring.split_bytes(spark, folder.as_uri(), 4)
    open_cost = 4 << 20  # Spark's default, added per file when it packs files into partitions
    assert 2 * (100 * 20_000 + open_cost) <= split <= 2 * (100 * 20_000 + open_cost) * 1.05
    with temporary_conf(spark, "spark.sql.files.maxPartitionBytes", str(split)):
        assert spark.read.parquet(folder.as_uri()).rdd.getNumPartitions() == 4
    # new_only leaves out what this version scored by the ids alone: no film crosses a shuffle.
    settings, lake = scored_lake
    card = resolve_model(spark, lake, path=small_model["model_dir"])
    scoring.run_scoring(spark, lake, settings, model_path=small_model["model_dir"], new_only=True)
    with temporary_conf(spark, "spark.sql.autoBroadcastJoinThreshold", "-1"):  # as if the ids were many
        rows = scoring.studies_to_score(spark, lake, settings.dataset, card.version, new_only=True)
        plan = rows._jdf.queryExecution().executedPlan().toString()
    assert "BroadcastHashJoin" in plan and "LeftAnti" in plan and "SortMergeJoin" not in plan


def nan_model_folder(source: str, dest: Path, version: str) -> Path:
    """The small model with its classifier's bias set to NaN: a real Keras model whose every output is NaN."""
    from xray_spark.models import load_model_safely

    shutil.copytree(source, dest)
    model = load_model_safely(str(dest / "model.keras"))
    last = next(layer for layer in reversed(model.layers) if len(layer.get_weights()) == 2)  # the classifier
    kernel, bias = last.get_weights()
    last.set_weights([kernel, np.full_like(bias, np.nan)])
    model.save(str(dest / "model.keras"))
    meta = json.loads((dest / "model.json").read_text())
    (dest / "model.json").write_text(json.dumps(meta | {"version": version}))
    return dest


def test_a_models_nan_outputs_are_never_a_probability_call_or_delivery(spark, scored_lake, small_model, tmp_path):
    """A champion whose outputs are all NaN: no film is scored, called or put anywhere; each is recorded with its
    reason in xray.not_scored once; registration refuses such a model outright."""
    from xray_spark.errors import ModelRefused
    from xray_spark.registry import record_model, register_model

    settings, lake = scored_lake
    folder = nan_model_folder(small_model["model_dir"], Path(lake.root) / "models" / "nan-model", "nan-model")
    with pytest.raises(ModelRefused, match=r"NaN or infinite outputs on probe films .*\(4 of 4 films\)"):
        register_model(spark, lake, str(folder), dataset=settings.dataset)
    record_model(spark, lake, read_card(str(folder)), dataset=settings.dataset)  # as if it slipped in
    summary = scoring.run_scoring(spark, lake, settings, model_path=str(folder), new_only=True)
    assert summary["to_score"] == 160 and summary["written"] == 0
    assert summary["not_scored"]["films"] == 160 and "NaN" in summary["not_scored"]["reason"]
    assert summary["heatmaps"]["written"] == 0
    predictions = _predictions(spark, lake).where(F.col("model_version") == "nan-model")
    assert predictions.count() == 0
    refused = spark.table("xray.not_scored").where(F.col("model_version") == "nan-model")
    assert refused.count() == 160 and refused.select("image_id").distinct().count() == 160
    assert {r["reason"] for r in refused.select("reason").distinct().collect()} == {udf.NON_FINITE}
    again = scoring.run_scoring(spark, lake, settings, model_path=str(folder), new_only=True)
    assert again["to_score"] == 0 and again["not_scored"]["films"] == 0  # recorded once, not every night


def test_a_film_with_one_infinite_output_is_set_aside_and_the_others_are_scored(spark, scored_lake, small_model):
    """The clamp in calibration ordered NaN above every number: a non-finite output is caught before it."""
    settings, lake = scored_lake
    card = resolve_model(spark, lake, path=small_model["model_dir"])
    rows = scoring.studies_to_score(spark, lake, settings.dataset, card.version, new_only=False).limit(12).coalesce(1)
    poisoned = {"nan": np.nan, "inf": np.inf}

    def loader(ref):
        def predict(pixels):
            out = np.full((len(pixels), ref.n_labels), 0.2, np.float32)
            means = pixels.reshape(len(pixels), -1).mean(axis=1)
            out[means == means.max(), 3] = poisoned["nan"]
            out[means == means.min(), 0] = poisoned["inf"]
            return out

        return predict

    run = ScoreRun("t", settings.dataset, card, dt.datetime(2026, 1, 1))
    out = udf.score_frame(rows, run, batch_size=12, make_predict_fn=loader).collect()
    assert len(out) == 12
    refused = [r for r in out if r[udf.NOT_SCORED] is not None]
    assert len(refused) == 2 and all(r[udf.NOT_SCORED] == udf.NON_FINITE for r in refused)
    kept = [r for r in out if r[udf.NOT_SCORED] is None]
    assert all(r["called"] is not None for r in kept)
