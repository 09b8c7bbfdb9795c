"""Progress lines in the job's words: what a line says, that a running stage is reported, how a terminal is told."""

from __future__ import annotations

import logging
import os
import time
from types import SimpleNamespace

from xray_spark.progress import SparkProgress, doing, expect, expected, stage_line, step
from xray_spark.stderr_route import terminal


def test_a_line_names_the_step_its_films_the_rate_and_the_time_left_never_a_spark_call_site():
    info = SimpleNamespace(
        stageId=7, name="mapInPandas at udf.py:98", numTasks=40, numCompletedTasks=10, numActiveTasks=2
    )
    line = stage_line("score", info, stage_seconds=60.0, images=2000, what="scoring")
    assert line == "score: scoring 500 of 2,000 films, ~8 films/s, 1:00 elapsed, 3:00 left"
    general = stage_line("nightly", SimpleNamespace(**{**vars(info), "numCompletedTasks": 0}), 5.0, None)
    assert general == "nightly: working, 0 of 40 parts done, 0:05 elapsed"
    assert "stage" not in line + general and "udf.py" not in line + general


def test_a_running_stage_is_reported_while_it_runs(spark, caplog):
    reporter = SparkProgress(spark, "test", interval=1.0).start()
    try:
        with caplog.at_level(logging.INFO, logger="xray_spark.progress"), step("scoring", films=800):
            spark.sparkContext.parallelize(range(8), 8).map(lambda x: time.sleep(0.8) or x).collect()
    finally:
        reporter.stop()
    lines = [r.getMessage() for r in caplog.records if r.name == "xray_spark.progress"]
    assert lines, "no progress line while an 8-task stage ran for several seconds"
    assert all(line.startswith("test: scoring ") and " of 800 films" in line for line in lines), lines


def test_a_steps_image_count_ends_with_the_step():
    """The nightly flow runs prepare then score in one session: score's rate is never prepare's count."""
    with step():
        expect(800)
        assert expected() == 800
    assert expected() is None
    with step():
        assert expected() is None and doing() == "working"
    with step("delivering", films=3):
        assert (expected(), doing()) == (3, "delivering")
    assert (expected(), doing()) == (None, "working")


def test_a_terminal_is_told_from_a_file(tmp_path):
    main, other = os.openpty()
    try:
        assert terminal(other)
    finally:
        os.close(main)
        os.close(other)
    with open(tmp_path / "log", "w") as fh:
        assert not terminal(fh.fileno())
