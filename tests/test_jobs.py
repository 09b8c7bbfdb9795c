"""The jobs as a user runs them: exit codes, the printed summary, Java checks (usage errors: test_bad_input.py)."""

from __future__ import annotations

import dataclasses
import io
import json
import os
from pathlib import Path

import pandas as pd
import pytest

from xray_spark.config import load_settings
from xray_spark.errors import EnvironmentProblem
from xray_spark.session import check_java

from .conftest import ROOT
from .jobs import run_in_process, run_job, run_submitted


def test_prepare_job_end_to_end(archive, tmp_path):
    """The job as the README runs it: exit 0, the summary table printed, the JSON written."""
    summary_path = tmp_path / "summary.json"
    result = run_job(
        "prepare",
        [
            "--config",
            str(ROOT / "conf" / "local.yaml"),
            "--lake",
            str(tmp_path / "lake"),
            "--metadata",
            str(archive / "Data_Entry_2017.csv"),
            "--images",
            str(archive / "images"),
            "--set",
            "image.size=32",
            "--set",
            "spark.driver_memory=1g",
            "--summary-json",
            str(summary_path),
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Cardiomegaly" in result.stdout and "160 written to the store" in result.stdout
    summary = json.loads(summary_path.read_text())
    assert summary["images"]["written"] == 160
    assert summary["configuration"]["split"] == {"train": 0.7, "val": 0.1, "test": 0.2, "salt": "xray-spark"}
    changed = [line for line in result.stderr.splitlines() if "settings that differ from the defaults" in line]
    assert len(changed) == 1 and "image.size=32" in changed[0] and "split.train" not in changed[0]
    assert (tmp_path / "lake" / "petastorm" / "nih" / "_xray_store.json").exists()


def _fake_java(tmp_path: Path, banner: str) -> Path:
    home = tmp_path / "jdk"
    (home / "bin").mkdir(parents=True)
    java = home / "bin" / "java"
    java.write_text(f"#!/bin/sh\necho '{banner}' >&2\n")
    java.chmod(0o755)
    return home


@pytest.mark.parametrize("banner", ['openjdk version "11.0.21" 2023-10-17', 'java version "1.8.0_392"'])
def test_old_java_is_refused_in_one_line(tmp_path, monkeypatch, banner):
    monkeypatch.setenv("JAVA_HOME", str(_fake_java(tmp_path, banner)))
    with pytest.raises(EnvironmentProblem, match=r"Java 17 or newer is required by Spark, found Java (11|8)"):
        check_java()


def test_java_17_is_accepted(tmp_path, monkeypatch):
    monkeypatch.setenv("JAVA_HOME", str(_fake_java(tmp_path, 'openjdk version "17.0.15" 2025-04-15')))
    assert check_java() == 17


def test_missing_java(tmp_path, monkeypatch):
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EnvironmentProblem, match="no 'java' was found"):
        check_java()


def test_score_evaluate_and_sql_jobs(spark, prepared, small_model, tmp_path):
    """The three jobs a nightly run and an analyst use, as subprocesses on a lake of their own (the registration
    before them and the refused query after them in this process: what their process does is checked elsewhere)."""
    import shutil

    _, lake, _ = prepared
    root = tmp_path / "lake"
    root.mkdir()
    os.symlink(Path(lake.root) / "petastorm", root / "petastorm")
    shutil.copytree(Path(lake.root) / "tables" / "studies", root / "tables" / "studies")
    common = ["--lake", str(root), "--set", "spark.driver_memory=1g"]
    registered = run_in_process("register_model", [*common, "--model", small_model["model_dir"]])
    assert registered.returncode == 0, registered.stderr[-3000:]
    assert json.loads(registered.stdout)["version"] == small_model["version"]
    assert (root / "models" / small_model["version"] / "model.keras").is_file()
    scored = run_job("score", [*common, "--model", small_model["model_dir"], "--new-only"], cwd=tmp_path)
    assert scored.returncode == 0, scored.stderr[-3000:]
    assert "160 predictions written to xray.predictions" in scored.stdout
    evaluated = run_job(
        "evaluate", [*common, "--model", small_model["model_dir"], "--set", "evaluate.bootstrap=50"], cwd=tmp_path
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "on the test films of dataset nih" in evaluated.stdout and "report.html" in evaluated.stdout
    # The predictions as CSV, under spark-submit: stdout is the data alone, pandas reads it as it is.
    query = "SELECT image_id, patient_id, top_probability FROM xray.predictions ORDER BY image_id"
    piped = run_submitted("sql", [*common, query, "--format", "csv"], cwd=tmp_path)
    assert piped.returncode == 0, piped.stderr[-3000:]
    frame = pd.read_csv(io.StringIO(piped.stdout))
    assert list(frame.columns) == ["image_id", "patient_id", "top_probability"] and len(frame) == 160
    assert frame.image_id.is_monotonic_increasing and frame.top_probability.between(0, 1).all()
    assert "settings that differ from the defaults" in piped.stderr
    bad = run_in_process("sql", [*common, "SELECT * FROM xray.no_such_table"])
    assert bad.returncode == 2
    errors = [line for line in bad.stderr.splitlines() if line.startswith("sql: error:")]
    assert len(errors) == 1 and "query failed" in errors[0] and "Traceback" not in bad.stderr


def test_spark_submit_conf_wins_over_the_builders_defaults(tmp_path):
    """``spark-submit --conf`` is the user's last word: the session builder's defaults do not replace it."""
    query = ["--lake", str(tmp_path / "lake"), "--format", "csv", "SET spark.sql.shuffle.partitions"]
    assert load_settings(None, []).spark.shuffle_partitions == 8, "the builder's default, which 3 is not"
    given = run_submitted("sql", query, submit_args=["--conf", "spark.sql.shuffle.partitions=3"], cwd=tmp_path)
    assert given.returncode == 0, given.stderr[-3000:]
    assert given.stdout.splitlines() == ["key,value", "spark.sql.shuffle.partitions,3"]


def test_the_nightly_job_ingests_scores_and_lists_tonights_studies_in_one_session(
    spark, prepared, small_model, tmp_path
):
    """jobs/nightly.py: the new studies only, into the store, xray.predictions and the page; a late CSV stops it."""
    import shutil

    from xray_spark.dev.synthetic import write_archive
    from xray_spark.lake import Lake
    from xray_spark.registry import set_alias
    from xray_spark.score.pipeline import run_scoring

    from .conftest import TEST_OVERRIDES

    settings, lake, _ = prepared
    root = tmp_path / "lake"
    shutil.copytree(lake.root, root, ignore=shutil.ignore_patterns("locks"))
    mine = Lake.at(str(root))
    set_alias(spark, mine, small_model["version"], reason="tonight's model")
    run_scoring(spark, mine, dataclasses.replace(settings, lake=str(root)), new_only=True)  # last night's
    incoming = tmp_path / "incoming"
    write_archive(incoming, n_images=24, size=96, seed=5, first_patient=900_000)
    common = [
        "--lake",
        str(root),
        *(a for o in TEST_OVERRIDES for a in ("--set", o)),
        "--set",
        "spark.driver_memory=1g",
    ]
    summary_file = tmp_path / "night.json"
    night = run_job("nightly", [*common, "--incoming", str(incoming), "--summary-json", str(summary_file)])
    assert night.returncode == 0, night.stderr[-3000:]
    summary = json.loads(summary_file.read_text())
    added = summary["prepare"]["images"]["written"]
    assert added == 24 and summary["prepare"]["metadata"]["already_in_store"] == 0
    assert summary["score"]["written"] == 24 and summary["score"]["model_version"] == small_model["version"]
    assert summary["worklist"]["films_scored_that_date"] >= 24 and Path(summary["worklist"]["page"]).is_file()
    # stdout: the three summaries the separate jobs print, and nothing else
    assert "24 predictions written to xray.predictions" in night.stdout and night.stdout.startswith("prepare ")
    assert "page: " in night.stdout and "INFO" not in night.stdout
    # The Python workers import TensorFlow to score and for the heatmaps: none of its
    # start-up notices reaches the log of a healthy CPU run.
    for notice in ("absl::InitializeLog", "oneDNN custom operations", "Could not find cuda drivers"):
        assert notice not in night.stderr, night.stderr[-3000:]
    scored = spark.read.parquet(str(root / "tables" / "predictions")).where(f"run_id = '{summary['score']['run_id']}'")
    assert scored.count() == 24 and scored.where("patient_id < 900000").count() == 0  # tonight's patients only
    late = run_job("nightly", [*common, "--incoming", str(tmp_path / "not-yet")])
    assert late.returncode == 2 and "Data_Entry_2017.csv has not arrived" in late.stderr
