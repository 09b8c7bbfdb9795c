"""Every usage error of the corpus stops its job with one line that names the input and the fix.

(The row-level faults of the corpus, which are quarantined rather than stopping a run,
are tested in test_prepare.py with :func:`tests.corpus.make_bad_archive`.)
"""

from __future__ import annotations

import re

import pytest

from . import corpus
from .jobs import run_job

CASES = [
    "metadata-missing",
    "metadata-wrong-header",
    "metadata-missing-column",
    "metadata-not-nih",
    "set-unknown-key",
    "set-wrong-type",
    "model-file-missing",
    "model-file-corrupt",
    "model-file-h5",
    "model-json-tampered",
    "sql-insert",
    "sql-insert-overwrite-directory",
]


@pytest.fixture(scope="module")
def usage_corpus(small_model, tmp_path_factory):
    return corpus.usage_cases(tmp_path_factory.mktemp("usage"), small_model["model_dir"])


@pytest.mark.parametrize("case", CASES)
def test_a_usage_error_is_one_line_naming_the_input(usage_corpus, case, tmp_path):
    job, args, needles = usage_corpus[case]
    result = run_job(job, [*args, "--set", "spark.driver_memory=1g"], cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip() and not _startup_chatter(line)]
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith(f"{job}: error: ")
    for needle in needles:
        assert needle in lines[0]
    for trace in ("Traceback", "at org.apache", "py4j", "Exception in thread"):
        assert trace not in result.stderr


def test_the_corpus_covers_every_case(usage_corpus):
    assert sorted(usage_corpus) == sorted(CASES)


STARTUP = re.compile(
    r"^\d\d:\d\d:\d\d INFO xray_spark: "  # our own log lines (the settings changed from the defaults)
    r"|^[IWE]\d{4} [\d:.]+ +\d+ \S+\.cc:\d+\] "  # TensorFlow's C++ start-up lines
    r"|^WARNING: All log messages before absl::InitializeLog"
)


def _startup_chatter(line: str) -> bool:
    """Informational lines printed at start-up; none of them is an error of the job."""
    return bool(STARTUP.match(line))
