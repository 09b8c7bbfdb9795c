"""The jobs as a user runs them: exit codes, one-line errors, the printed summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from xray_spark.errors import EnvironmentProblem
from xray_spark.session import check_java

from .conftest import ROOT


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, str(ROOT / "jobs" / "prepare.py"), *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _assert_one_clear_line(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("prepare: error: ")
    for needle in needles:
        assert needle in lines[0]
    assert "Traceback" not in result.stderr and "at org.apache" not in result.stderr


def test_missing_metadata_is_one_line(tmp_path):
    result = _run(["--metadata", "missing.csv", "--images", "."], tmp_path)
    _assert_one_clear_line(result, "missing.csv does not exist", "--metadata")


def test_wrong_header_is_one_line(tmp_path):
    (tmp_path / "meta.csv").write_text("id,label\n1,Mass\n")
    result = _run(["--metadata", "meta.csv", "--images", "."], tmp_path)
    _assert_one_clear_line(result, "meta.csv has 2 columns")


@pytest.mark.parametrize(
    ("override", "needle"), [("image.sise=3", "'image.sise'"), ("image.size=big", "must be an integer")]
)
def test_bad_override_is_one_line(tmp_path, override, needle):
    result = _run(["--metadata", "x.csv", "--images", ".", "--set", override], tmp_path)
    _assert_one_clear_line(result, needle)


def test_prepare_job_end_to_end(archive, tmp_path):
    """The job as the README runs it: exit 0, the summary table printed, the JSON written."""
    summary_path = tmp_path / "summary.json"
    result = _run(
        [
            "--conf",
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
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Cardiomegaly" in result.stdout and "160 written to the store" in result.stdout
    assert '"size": 32' in result.stderr, "the resolved configuration is logged at start-up"
    summary = json.loads(summary_path.read_text())
    assert summary["images"]["written"] == 160
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


def _job(name: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(ROOT / "jobs" / f"{name}.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_score_evaluate_and_sql_jobs(prepared, small_model, tmp_path):
    """The three jobs a nightly run and an analyst use, as subprocesses on a lake of their own."""
    import shutil

    _, lake, _ = prepared
    root = tmp_path / "lake"
    root.mkdir()
    os.symlink(Path(lake.root) / "petastorm", root / "petastorm")
    shutil.copytree(Path(lake.root) / "tables" / "studies", root / "tables" / "studies")
    common = ["--lake", str(root), "--set", "spark.driver_memory=1g"]
    scored = _job("score", [*common, "--model", small_model["model_dir"], "--new-only"], tmp_path)
    assert scored.returncode == 0, scored.stderr[-3000:]
    assert "160 predictions written to xray.predictions" in scored.stdout
    evaluated = _job(
        "evaluate", [*common, "--model", small_model["model_dir"], "--set", "evaluate.bootstrap=50"], tmp_path
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "on the test split" in evaluated.stdout and "report.html" in evaluated.stdout
    counted = _job("sql", [*common, "SELECT COUNT(*) AS n FROM xray.predictions", "--format", "csv"], tmp_path)
    assert counted.returncode == 0, counted.stderr[-3000:]
    assert counted.stdout.split() == ["n", "160"]
    bad = _job("sql", [*common, "SELECT * FROM xray.no_such_table"], tmp_path)
    assert bad.returncode == 2
    errors = [line for line in bad.stderr.splitlines() if line.startswith("sql: error:")]
    assert len(errors) == 1 and "query failed" in errors[0] and "Traceback" not in bad.stderr
