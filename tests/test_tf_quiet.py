"""TensorFlow's native start-up notices stay off the console; anything else it says still reaches stderr."""

from __future__ import annotations

import subprocess
import sys

from xray_spark.tf_quiet import benign

from .jobs import job_env

NOTICES = ("absl::InitializeLog", "oneDNN custom operations", "Could not find cuda drivers", "failed call to cuInit")


def _stderr_of(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], env=job_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


def test_the_start_up_notices_are_filtered_and_other_lines_are_not():
    prefix = "I0000 00:00:1795701413.041947   25161 "
    absl = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    assert benign(absl, nvidia=False)
    assert benign(prefix + "port.cc:153] oneDNN custom operations are on. You may see ...", nvidia=False)
    cuinit = "E0000 00:00:1795701414.956919   25161 cuda_platform.cc:52] failed call to cuInit: INTERNAL: ..."
    assert benign(cuinit, nvidia=False) and not benign(cuinit, nvidia=True)  # with NVIDIA devices it is news
    assert not benign("E0000 00:00:1795701414.956919   25161 op_kernel.cc:1] OOM when allocating tensor", nvidia=False)
    assert not benign("Traceback (most recent call last):", nvidia=False)


def test_importing_tensorflow_through_the_package_prints_no_notice():
    plain = _stderr_of("import tensorflow as tf; tf.config.list_physical_devices('GPU')")
    assert any(notice in plain for notice in NOTICES), "the control printed no notice: nothing to filter here"
    quiet = _stderr_of(
        "import sys; from xray_spark.tf_quiet import import_tensorflow; import_tensorflow(); "
        "print('after the import', file=sys.stderr)"
    )
    assert not [notice for notice in NOTICES if notice in quiet], quiet
    assert "after the import" in quiet  # stderr works again after the import
