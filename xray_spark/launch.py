"""``xray-spark <job> [args]``: a job run through ``spark-submit`` as the package means it to run.

::

    xray-spark [spark-submit options] <job> [job arguments]
    xray-spark --master spark://head:7077 --conf spark.executor.memory=4g score --new-only --config conf/my.yaml
    xray-spark --print-command prepare --metadata ...     # show what would run, run nothing

Options before the job's name go to ``spark-submit`` unchanged (``--master``, ``--conf k=v``,
``--driver-memory``, ``--packages`` ...); everything after it goes to the job. The job's
own ``--config FILE`` is the project's YAML configuration, as for ``spark-submit jobs/<job>.py``
(``--conf`` means one thing: spark-submit's ``k=v``; a job still reads an old ``--config FILE``,
with a warning, in this release).

What it adds to a plain ``spark-submit xray_spark/jobs/<job>.py``, each only where the
user's options do not say otherwise:

* ``--master`` and ``--driver-memory`` from the job's configuration (``spark.master``,
  ``spark.driver_memory``), so a conf file for a cluster runs the job there;
* the driver JVM's options: the package's log4j configuration (Spark's INFO lines off the
  console, warnings kept) and :data:`~xray_spark.session.DRIVER_JVM_OPTIONS`;
* ``PYSPARK_PYTHON`` and ``PYSPARK_DRIVER_PYTHON``: this interpreter, so the executors find
  the installed packages; ``SPARK_LOCAL_IP=127.0.0.1`` unless set.

The exit status is the job's (docs/faults.md, exit statuses).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

#: The jobs, each ``xray_spark/jobs/<name>.py``, with what it does.
JOBS = {
    "prepare": "an archive (NIH CSV + PNGs, or a DICOM export) into the training store",
    "train": "a multi-label CNN from the store",
    "promote": "make a trained model the champion (--if-passed: only on a passed challenge)",
    "challenge": "a challenger against the champion on the same labelled patients, by the promotion rule",
    "monitor": "each night's inputs and the champion's outputs against a reference, no ground truth needed",
    "register_model": "bring a model trained elsewhere into the lake (a model folder, or an ONNX file and its card)",
    "quantize": "an int8 copy of an ONNX model as a new model version, for scoring on CPU",
    "score": "probabilities (and heatmaps) for the store's films",
    "evaluate": "AUROC with intervals, calibration, operating points, localization",
    "worklist": "the riskiest films of a scoring date as pages",
    "sql": "a read-only SQL query over the lake's tables",
    "nightly": "tonight's delivery ingested, scored and on the worklist (and results to the PACS), in one session",
    "deliver": "the champion's results into each film's study in the PACS: DICOM SR and heatmap images",
    "verdicts": "readers' verdicts from the worklist web app as xray.verdicts (labels for training)",
}
#: spark-submit options that take no value.
SUBMIT_FLAGS = frozenset({"--verbose", "-v", "--supervise"})
PRINT_COMMAND = "--print-command"


def split_argv(argv: Sequence[str]) -> tuple[list[str], str | None, list[str], bool]:
    """(spark-submit options, the job, the job's arguments, whether only to print the command)."""
    submit: list[str] = []
    print_only = False
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == PRINT_COMMAND:
            print_only = True
        elif not token.startswith("-"):
            return submit, token, list(argv[i + 1 :]), print_only
        elif token in SUBMIT_FLAGS or "=" in token or token in ("-h", "--help"):
            submit.append(token)
        else:
            submit.extend(argv[i : i + 2])
            i += 1
        i += 1
    return submit, None, [], print_only


def _given(submit: Sequence[str], option: str) -> bool:
    return any(t == option or t.startswith(option + "=") for t in submit)


def _job_spark_settings(job_args: Sequence[str]) -> tuple[str | None, str | None, bool]:
    """(spark.master, spark.driver_memory, spark.class_archive) of the job's configuration; (None, None, False)
    when it does not load (the job itself then says why, in one line)."""
    from xray_spark.config import load_settings
    from xray_spark.errors import XraySparkError

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--config", "--conf", dest="conf")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    known, _ = parser.parse_known_args(list(job_args))
    try:
        settings = load_settings(known.conf, known.overrides)
    except XraySparkError:
        return None, None, False
    return settings.spark.master, settings.spark.driver_memory, settings.spark.class_archive


def job_file(job: str) -> Path:
    """The job's module file in the installed package."""
    spec = importlib.util.find_spec(f"xray_spark.jobs.{job}")
    assert spec is not None and spec.origin, job
    return Path(spec.origin)


def spark_submit() -> str:
    """The spark-submit of the installed pyspark."""
    spec = importlib.util.find_spec("pyspark")
    assert spec is not None and spec.origin, "pyspark is a dependency of xray-spark"
    return str(Path(spec.origin).parent / "bin" / "spark-submit")


def submit_command(job: str, job_args: Sequence[str], submit: Sequence[str] = ()) -> list[str]:
    """The spark-submit command line for ``job`` (see the module's description of what it adds)."""
    from xray_spark.session import driver_java_options

    command = [spark_submit()]
    master, memory, archive = _job_spark_settings(job_args)
    if master and not _given(submit, "--master"):
        command += ["--master", master]
    if memory and not _given(submit, "--driver-memory"):
        command += ["--driver-memory", memory]
    if not _given(submit, "--driver-java-options"):
        command += ["--driver-java-options", driver_java_options(class_archive=archive)]
    return [*command, *submit, str(job_file(job)), *job_args]


def submit_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if environ is None else environ)
    env.setdefault("PYSPARK_PYTHON", sys.executable)
    env.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    return env


def usage() -> str:
    width = max(map(len, JOBS))
    lines = [
        "usage: xray-spark [spark-submit options] <job> [job arguments]",
        "       xray-spark --print-command <job> [job arguments]   (show the spark-submit line, run nothing)",
        "       xray-spark --class-archive   (write the driver's class archive now: later jobs start faster)",
        "",
        "jobs (xray-spark <job> --help for each one's arguments):",
        *(f"  {name.ljust(width)}  {what}" for name, what in JOBS.items()),
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv == ["--class-archive"]:
        from xray_spark.session import write_class_archive

        written = write_class_archive()
        said = written or "none written (one exists already, another job is writing it, or the cache is read-only)"
        print(f"xray-spark: class archive: {said}", file=sys.stderr)
        return 0
    submit, job, job_args, print_only = split_argv(argv)
    if job is None:
        asked = any(t in ("-h", "--help") for t in submit)
        print(usage(), file=sys.stdout if asked else sys.stderr)
        return 0 if asked else 2
    if job not in JOBS:
        print(f"xray-spark: error: no job {job!r}: choose one of {', '.join(JOBS)}", file=sys.stderr)
        return 2
    if job == "sql" and not submit and not print_only:  # a running SQL server answers in a second
        from xray_spark.sql_client import sql_through_server

        answered = sql_through_server(job_args)
        if answered is not None:
            return answered
    command = submit_command(job, job_args, submit)
    if print_only:
        print(shlex.join(command))
        return 0
    try:
        return subprocess.call(command, env=submit_env())
    except KeyboardInterrupt:  # the job has had the signal too and says how it stopped
        return 130
    finally:
        from xray_spark.class_archive import finish_own
        from xray_spark.session import java_executable

        finish_own(java_executable())  # the driver JVM has exited: an archive it wrote is checked, kept for the next


if __name__ == "__main__":
    sys.exit(main())
