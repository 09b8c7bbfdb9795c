"""``xray-spark <job>``: spark-submit with the package's options, the user's spark-submit options passed through."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from xray_spark import launch
from xray_spark.session import DRIVER_JVM_OPTIONS

from .jobs import job_env


def test_options_before_the_job_go_to_spark_submit_and_after_it_to_the_job():
    argv = ["--master", "local[1]", "--conf", "spark.x=1", "--verbose", "score", "--config", "my.yaml", "--new-only"]
    assert launch.split_argv(argv) == (["--master", "local[1]", "--conf", "spark.x=1", "--verbose"], "score",
                                       ["--config", "my.yaml", "--new-only"], False)  # fmt: skip
    assert launch.split_argv(["--print-command", "--driver-memory=2g", "sql", "SELECT 1"])[1:] == (
        "sql",
        ["SELECT 1"],
        True,
    )


def test_the_master_and_memory_come_from_the_jobs_conf_unless_spark_submit_is_told(tmp_path):
    conf = tmp_path / "cluster.yaml"
    conf.write_text("spark:\n  master: spark://127.0.0.1:7077\n  driver_memory: 3g\n")
    command = launch.submit_command("score", ["--config", str(conf), "--new-only"])
    assert command[command.index("--master") + 1] == "spark://127.0.0.1:7077"
    assert command[command.index("--driver-memory") + 1] == "3g"
    assert DRIVER_JVM_OPTIONS in command[command.index("--driver-java-options") + 1]
    assert command[-4:] == [str(launch.job_file("score")), "--config", str(conf), "--new-only"]
    told = launch.submit_command("score", ["--config", str(conf)], ["--master", "local[1]", "--driver-memory", "1g"])
    assert told.count("--master") == 1 and told[told.index("--master") + 1] == "local[1]"
    assert told.count("--driver-memory") == 1 and told[told.index("--driver-memory") + 1] == "1g"
    assert Path(command[0]).name == "spark-submit" and Path(command[0]).is_file()


def test_a_job_run_by_the_launcher_prints_only_its_data_on_stdout(tmp_path):
    """The console entry point runs the job under spark-submit with the package's log4j file: the query's result
    on stdout, no Spark INFO lines on stderr (a plain spark-submit prints about 40)."""
    launcher = Path(sys.executable).parent / "xray-spark"
    command = [str(launcher)] if launcher.exists() else [sys.executable, "-m", "xray_spark.launch"]
    query = "SELECT 40 + 2 AS answer"
    result = subprocess.run(
        [*command, "--master", "local[1]", "sql", "--lake", str(tmp_path / "lake"), "--format", "csv", query],
        env=job_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines() == ["answer", "42"]
    spark_info = [line for line in result.stderr.splitlines() if " INFO " in line and " xray_spark" not in line]
    assert not spark_info, result.stderr[:2000]


def test_an_unknown_job_is_refused_in_one_line():
    result = subprocess.run(
        [sys.executable, "-m", "xray_spark.launch", "scoer"], env=job_env(), capture_output=True, text=True
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "xray-spark: error: no job 'scoer': choose one of " + ", ".join(launch.JOBS)
    ]


def test_conf_means_spark_submit_s_k_v_and_an_old_conf_file_after_the_job_is_read_with_a_warning(tmp_path, capsys):
    from xray_spark.jobs.score import _arg_parser

    conf = tmp_path / "site.yaml"
    conf.write_text("spark:\n  master: local[3]\n")
    assert _arg_parser().parse_args(["--config", str(conf)]).conf == str(conf)
    assert capsys.readouterr().err == ""
    assert _arg_parser().parse_args(["--conf", str(conf)]).conf == str(conf)
    assert "--conf FILE is now --config FILE" in capsys.readouterr().err
    old = launch.submit_command("score", ["--conf", str(conf)])
    assert old[old.index("--master") + 1] == "local[3]", "the launcher reads the old flag's file too"
