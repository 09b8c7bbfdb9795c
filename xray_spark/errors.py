"""The package's own exceptions.

Every message names the input that is wrong and, where there is one, the fix. Jobs turn
a :class:`UsageError` into one line on stderr and exit status 2, never a stack trace.
"""

from __future__ import annotations


class XraySparkError(Exception):
    """Base class of every error raised on purpose by xray-spark."""


class UsageError(XraySparkError):
    """The user asked for something impossible: a missing file, a bad option, a wrong column."""


class ConfigError(UsageError):
    """A configuration file or a ``--set`` override is invalid."""


class EnvironmentProblem(UsageError):
    """The machine lacks something the jobs need (Java 17, a writable lake)."""


class LockBusy(XraySparkError):
    """Another run holds the lock this run needs (``xray_spark.locks``); try again later."""


class ModelRefused(UsageError):
    """A model file that could run code when loaded, or that does not match what was registered."""


class ImageError(XraySparkError):
    """An image could not be turned into a training image; ``reason`` is its quarantine code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class QuarantineLimitExceeded(XraySparkError):
    """More of the input was quarantined than ``quarantine.max_fraction`` allows."""

    def __init__(self, message: str, summary: dict | None = None) -> None:
        super().__init__(message)
        self.summary = summary or {}


def first_line(exc: BaseException) -> str:
    """The line of an exception worth showing a user, without the Java or Python stack.

    A Spark task that failed in Python carries the worker's traceback in its message: the
    traceback's last line (``ValueError: ...``) is the error. Anything else: its first line.
    """
    lines = str(exc).strip().splitlines()
    for i, line in enumerate(lines):
        if "Traceback (most recent call last)" in line:
            block = []
            for rest in lines[i + 1 :]:
                if not rest.strip() or rest.strip().startswith("at "):
                    break
                block.append(rest.strip())
            if block:
                return block[-1]
    return lines[0] if lines else type(exc).__name__
