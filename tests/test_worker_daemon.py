"""The Python worker daemon: workers fork with TensorFlow already imported; a module that cannot load is named and
skipped, and the daemon still starts."""

from __future__ import annotations

from xray_spark.worker_daemon import preload


def test_the_sessions_workers_fork_with_tensorflow_already_imported(spark):
    """The test session asks for TensorFlow (as score, nightly and challenge do): a task finds it imported before
    its own code imports anything."""

    def modules(batches):
        import sys

        import pandas as pd

        for batch in batches:
            yield pd.DataFrame({"tf": ["tensorflow" in sys.modules] * len(batch)})

    rows = spark.range(4, numPartitions=2).mapInPandas(modules, "tf boolean").collect()
    assert len(rows) == 4 and all(r.tf for r in rows)
    assert spark.sparkContext.getConf().get("spark.python.daemon.module") == "xray_spark.worker_daemon"


def test_a_module_that_cannot_load_is_named_and_the_rest_are_imported(capsys):
    assert preload(["json", "no_such_module_anywhere", "csv"]) == ["no_such_module_anywhere"]
    said = capsys.readouterr()
    assert said.out == "" and "no_such_module_anywhere not preloaded: ModuleNotFoundError" in said.err
