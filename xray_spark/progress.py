"""Progress a cron log can show: one line at least every 30 s while Spark works, when stdout is not a terminal.

On a terminal, Spark's console progress bar shows the running stage (``spark.ui.showConsoleProgress``,
on when stderr is a terminal). In a log file it is off, and a long run would say nothing
between its start and its summary; :class:`SparkProgress` (started by every job's session)
writes, every ``interval`` seconds while a Spark stage runs, one line to stderr, e.g.
``score: stage 7 (mapInPandas at udf.py:98) 18/40 tasks (2 running), ~61 images/s, 2:31
elapsed, ETA 3:05``.

Tasks done and total come from Spark's status tracker; the images per second are the job's
images (:func:`expect`) times the share of the stage's tasks done, over the stage's time,
so they are an estimate for stages whose tasks hold similar numbers of images.

Under ``spark-submit`` the job's own stdout and stderr are pipes to the ``spark-submit``
JVM; :func:`xray_spark.stderr_route.terminal` asks about the JVM's (the user's) descriptors instead.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

from xray_spark.stderr_route import terminal

log = logging.getLogger(__name__)

#: Images the running step works through (set by the step once it knows, inside :func:`step`), for images/s.
_expected: dict[str, int] = {}


@contextlib.contextmanager
def step() -> Iterator[None]:
    """One step of a job (prepare, score): what it :func:`expect`s holds inside it only, so a later step in
    the same session (the nightly flow's) never reports images/s from an earlier step's count."""
    _expected.clear()
    try:
        yield
    finally:
        _expected.clear()


def expected() -> int | None:
    """The images the running step said it works through, or None outside a step that said."""
    return _expected.get("images")


def expect(images: int) -> None:
    """The number of images the step's main stages go through (for the images/s estimate)."""
    _expected["images"] = int(images)


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    if seconds >= 3600:
        return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    return f"{seconds // 60}:{seconds % 60:02d}"


def stage_line(job: str, info: Any, stage_seconds: float, images: int | None) -> str:
    """One progress line for a stage (``info``: pyspark's ``SparkStageInfo``)."""
    done, total = info.numCompletedTasks, max(info.numTasks, 1)
    parts = [f"{job}: stage {info.stageId} ({info.name}) {done}/{total} tasks ({info.numActiveTasks} running)"]
    if images and stage_seconds > 0 and done:
        parts.append(f"~{images * done / total / stage_seconds:,.0f} images/s")
    parts.append(f"{_clock(stage_seconds)} elapsed")
    if done and done < total:
        parts.append(f"ETA {_clock(stage_seconds * (total - done) / done)}")
    return ", ".join(parts)


class SparkProgress:
    """A daemon thread that logs the active Spark stages every ``interval`` seconds."""

    def __init__(self, spark: Any, job: str, interval: float = 30.0) -> None:
        self.spark = spark
        self.job = job
        self.interval = interval
        self._stop = threading.Event()
        self._first_seen: dict[int, float] = {}
        self._thread = threading.Thread(target=self._run, name="spark-progress", daemon=True)

    def start(self) -> SparkProgress:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def lines(self) -> list[str]:
        """The lines for the stages running now."""
        tracker = self.spark.sparkContext.statusTracker()
        now = time.monotonic()
        out = []
        for stage_id in sorted(tracker.getActiveStageIds()):
            info = tracker.getStageInfo(stage_id)
            if info is None:
                continue
            first = self._first_seen.setdefault(stage_id, now)
            out.append(stage_line(self.job, info, now - first, expected()))
        return out

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(min(5.0, self.interval)):  # looks often, to time each stage from its start
            try:
                lines = self.lines()
            except Exception:  # the session is stopping: nothing more to report
                return
            if time.monotonic() - last >= self.interval:
                for line in lines:
                    log.info("%s", line)
                last = time.monotonic()


def start_if_logging(spark: Any, job: str, interval: float = 30.0) -> SparkProgress | None:
    """Start :class:`SparkProgress` when stdout is not a terminal (a cron log); else None (the bar shows)."""
    if terminal(1):
        return None
    return SparkProgress(spark, job, interval).start()
