"""The one SparkSession builder.

* Checks for Java 17+ first and says so in one line when it is missing.
* Runs the Python workers on the driver's own interpreter (``spark.pyspark.python``), so a
  virtual environment's petastorm and OpenCV are found by the executors in local mode.
* Keeps Spark's console quiet apart from warnings (progress is the job's own lines, :mod:`xray_spark.progress`).
* In local mode nothing listens beyond loopback: the driver's RPC and block manager bind
  to 127.0.0.1, the web UI is off unless asked for, and when it is on it binds to
  ``SPARK_LOCAL_IP`` (127.0.0.1 unless the environment says otherwise).

Library functions never build sessions: they take ``spark`` as an argument. The tables
are registered by :mod:`xray_spark.lake.tables` (``cli.open_lake`` does it for the jobs that query them).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from importlib import resources
from pathlib import Path

from pyspark.sql import SparkSession

from xray_spark.config import SparkSettings
from xray_spark.errors import EnvironmentProblem
from xray_spark.stderr_route import under_spark_submit

MIN_JAVA = 17


#: The driver JVM compiles with C1 only. In local mode the heavy work runs in the Python
#: workers and the JVM plans queries and moves Arrow batches: C2's warm-up costs a cold
#: job seconds and buys nothing back at the benchmark's sizes (``bench/results/``,
#: ``pipeline_cpu2.json``). ``xray-spark`` passes the same options to spark-submit;
#: executors on a cluster keep the default. C1 alone gets the small code cache of a JVM
#: without tiers (48 MiB): a long-lived driver (the SQL server, the web app's, a test run's)
#: filled it in about a minute, and a full cache stops compiling for good ("CodeCache is full.
#: Compiler has been disabled"), every later query interpreted. The tiered default, 240 MiB,
#: is reserved instead (address space, filled only as compiled).
DRIVER_JVM_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:ReservedCodeCacheSize=240m"


def driver_java_options(extra: str = "", *, class_archive: bool = True) -> str:
    """The driver JVM's options: the product's log4j configuration, :data:`DRIVER_JVM_OPTIONS`, the class archive
    (:mod:`xray_spark.class_archive`), then ``extra``."""
    from xray_spark.class_archive import jvm_options

    archive, _ = jvm_options(java_executable(), DRIVER_JVM_OPTIONS, enabled=class_archive, other=extra)
    return f"-Dlog4j2.configurationFile=file:{log4j_file()} {DRIVER_JVM_OPTIONS} {archive} {extra}".rstrip()


def java_executable() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home:
        candidate = os.path.join(home, "bin", "java")
        if os.path.exists(candidate):
            return candidate
    return shutil.which("java")


def java_major_version(java: str) -> int | None:
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        return None
    major = int(match.group(1))
    if major == 1 and match.group(2):  # "1.8.0_392" is Java 8
        major = int(match.group(2))
    return major


def check_java() -> int:
    """The Java major version, or :class:`EnvironmentProblem` when Spark cannot run on it."""
    java = java_executable()
    if java is None:
        raise EnvironmentProblem(
            f"Java {MIN_JAVA} is required by Spark and no 'java' was found: "
            "install OpenJDK 17 (e.g. apt-get install openjdk-17-jre-headless) or set JAVA_HOME"
        )
    major = java_major_version(java)
    if major is None or major < MIN_JAVA:
        found = "an unknown version" if major is None else f"Java {major}"
        raise EnvironmentProblem(
            f"Java {MIN_JAVA} or newer is required by Spark, found {found} at {java}: "
            "install OpenJDK 17 and put it first on PATH or set JAVA_HOME"
        )
    return major


def log4j_file() -> str:
    return str(resources.files("xray_spark").joinpath("log4j2.properties"))


LOOPBACK = "127.0.0.1"


def effective_master(settings: SparkSettings) -> str:
    """The master this process will run on: spark-submit's ``--master`` where it gave one."""
    if under_spark_submit():
        from pyspark import SparkConf

        return SparkConf().get("spark.master", settings.master) or settings.master
    return settings.master


def loopback_conf(master: str, given: dict[str, str]) -> dict[str, str]:
    """Local-mode properties that keep every service on 127.0.0.1 (what ``given`` sets wins)."""
    if not master.startswith("local"):
        return {}
    defaults = {
        "spark.driver.host": LOOPBACK,
        "spark.driver.bindAddress": LOOPBACK,
        "spark.ui.enabled": "false",
    }
    return {k: v for k, v in defaults.items() if k not in given}


def build_session(
    settings: SparkSettings,
    *,
    app_name: str | None = None,
    jvm_options: str = "",
    worker_modules: Sequence[str] = (),
) -> SparkSession:
    """Create (or return) the SparkSession for a job or a test.

    ``settings.master`` is used when the job runs under plain ``python``; under
    ``spark-submit`` the ``--master`` given there wins, as Spark users expect.
    ``jvm_options`` are added to the driver JVM's options (plain ``python`` only).
    ``worker_modules`` are imported by the Python worker daemon before it forks each worker
    (:mod:`xray_spark.worker_daemon`).
    """
    check_java()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    master = effective_master(settings)
    if master.startswith("local"):
        # The web UI binds to SPARK_LOCAL_IP, read by the JVM at start (under spark-submit,
        # the Makefile exports it); the other services follow spark.driver.bindAddress.
        os.environ.setdefault("SPARK_LOCAL_IP", LOOPBACK)
    builder = SparkSession.builder.appName(app_name or settings.app_name)
    if not under_spark_submit():
        builder = builder.master(settings.master)
        builder = builder.config("spark.driver.memory", settings.driver_memory)
        options = driver_java_options(jvm_options, class_archive=settings.class_archive)
        builder = builder.config("spark.driver.extraJavaOptions", options)
    defaults = {
        "spark.pyspark.python": os.environ["PYSPARK_PYTHON"],
        "spark.sql.shuffle.partitions": str(settings.shuffle_partitions),
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.showConsoleProgress": "false",  # stage numbers and call sites: the job's own lines instead
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        # Keep the catalog in memory: every process rebuilds it from the lake, so no
        # process can lock another out (the embedded Derby metastore would).
        "spark.sql.catalogImplementation": "in-memory",
        # petastorm 0.12 calls pyarrow APIs that pyarrow 14 flags on every use, in the
        # Python workers too (row-group indexing runs there); the pins are deliberate.
        "spark.executorEnv.PYTHONWARNINGS": "ignore::FutureWarning,ignore::UnicodeWarning",
    }
    if worker_modules:
        from xray_spark import worker_daemon

        defaults["spark.python.daemon.module"] = worker_daemon.__name__
        preload = [*worker_daemon.ARROW_MODULES, *worker_modules]
        defaults[f"spark.executorEnv.{worker_daemon.PRELOAD_ENV}"] = ",".join(dict.fromkeys(preload))
    submitted: dict[str, str] = {}
    if under_spark_submit():
        from pyspark import SparkConf

        submitted = dict(SparkConf().getAll())  # spark-submit --conf, --driver-memory ...
    given = {**settings.conf, **submitted}
    # Precedence: spark-submit's own settings, then the conf file's spark.conf, then these defaults.
    chosen = {**defaults, **loopback_conf(master, given), **settings.conf}
    for key, value in chosen.items():
        if key not in submitted:
            builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(settings.log_level)
    return spark


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nobody listens on right now at ``host`` ("" for every address)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def temporary_conf(spark: SparkSession, key: str, value: str) -> Iterator[None]:
    """Set a runtime SQL conf for the block, and restore what it was however the block ends."""
    previous = spark.conf.get(key, None)
    spark.conf.set(key, value)
    try:
        yield
    finally:
        if previous is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, previous)


def write_class_archive() -> Path | None:
    """Start a driver that writes the class archive (:mod:`xray_spark.class_archive`) as it exits, after the work
    every job does (a small Parquet write and read, a join, an aggregation, a Python function); the archive, or
    None when one exists already or the cache cannot be written."""
    import tempfile

    from pyspark import SparkContext
    from pyspark.sql import functions as F

    from xray_spark.class_archive import finish_own
    from xray_spark.config import load_settings

    spark = build_session(load_settings(None, []).spark, app_name="xray-spark class archive")
    with tempfile.TemporaryDirectory() as tmp:
        frame = spark.range(200).withColumn("k", F.col("id") % 7).withColumn("t", F.current_timestamp())
        frame.write.partitionBy("k").parquet(f"file://{tmp}/t")
        back = spark.read.parquet(f"file://{tmp}/t")
        back.join(back.groupBy("k").count(), "k").selectExpr("k", "count", "id + 1 AS n").collect()
        spark.createDataFrame([(1, "a")], "x int, y string").selectExpr("upper(y)").toPandas()
    spark.stop()
    gateway = SparkContext._gateway
    jvm = getattr(gateway, "proc", None)
    if gateway is None or jvm is None:
        return None
    gateway.shutdown()
    jvm.stdin.close()  # the gateway's JVM exits when its stdin closes, writing the archive
    jvm.wait(timeout=300)
    return finish_own(java_executable())
