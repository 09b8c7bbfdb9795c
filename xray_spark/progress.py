"""Progress in the job's words: one line at least every 30 s in a log (every 5 s on a terminal) while Spark works.

Every job's session starts :class:`SparkProgress`, which writes one line to stderr while a
Spark stage runs, in the words of the job's step and its films, never a Spark stage's call
site: ``score: scoring 1,200 of 4,000 films, ~310 films/s, 0:04 elapsed, 0:09 left``. A step
names itself and the films it works through (:func:`step`); outside a named step the line
says what the job is doing in general (``nightly: working, 2 of 8 parts done, 0:31 elapsed``).
Spark's own console bar (stage numbers and call sites) is off.

The films done are the step's films times the share of the running stage's tasks done (from
Spark's status tracker), so they are an estimate for stages whose tasks hold similar numbers of
films.

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

#: The running step: its words ("scoring") and the films it works through (set once it knows, inside :func:`step`).
_expected: dict[str, Any] = {}


@contextlib.contextmanager
def step(doing: str = "", films: int | None = None) -> Iterator[None]:
    """One step of a job (``doing``: "preparing", "scoring", "delivering"): what it :func:`expect`s holds inside it
    only, so a later step in the same session (the nightly flow's) never reports an earlier step's count."""
    _expected.clear()
    if doing:
        _expected["doing"] = doing
    if films is not None:
        _expected["images"] = int(films)
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


def doing() -> str:
    """The running step's words, or "working" outside a named step."""
    return str(_expected.get("doing") or "working")


def stage_line(job: str, info: Any, stage_seconds: float, images: int | None, what: str = "working") -> str:
    """One progress line for a running stage (``info``: pyspark's ``SparkStageInfo``), in the step's words."""
    done, total = info.numCompletedTasks, max(info.numTasks, 1)
    if images:
        parts = [f"{job}: {what} {images * done // total:,} of {images:,} films"]
        if stage_seconds > 0 and done:
            parts.append(f"~{images * done / total / stage_seconds:,.0f} films/s")
    else:
        parts = [f"{job}: {what}, {done} of {total} parts done"]
    parts.append(f"{_clock(stage_seconds)} elapsed")
    if done and done < total:
        parts.append(f"{_clock(stage_seconds * (total - done) / done)} left")
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
            if now - first >= 1.0:  # a stage just begun has nothing to say yet
                out.append(stage_line(self.job, info, now - first, expected(), doing()))
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


def start_progress(spark: Any, job: str, interval: float = 30.0) -> SparkProgress:
    """Start :class:`SparkProgress`: a line every ``interval`` seconds in a log, every 5 s on a terminal."""
    return SparkProgress(spark, job, 5.0 if terminal(2) else interval).start()
