"""TensorFlow imported without its native start-up notices on the console.

Importing TensorFlow and looking for GPUs prints lines from C++ straight to file descriptor
2, some before its logging is set up, so ``TF_CPP_MIN_LOG_LEVEL`` cannot silence them: the
absl pre-initialisation warning, the oneDNN notice, "Could not find cuda drivers", and on
a machine without NVIDIA devices "failed call to cuInit". On a healthy CPU run they are
noise in every job's log, in the driver and in each Python worker.

:func:`import_tensorflow` imports TensorFlow and tf_keras and lists the GPUs (where
``cuInit`` runs) with descriptor 2 sent to a temporary file, then writes back every line
that is not one of those known notices: anything else TensorFlow says at start-up (an
unexpected error, a cuInit failure on a machine that has NVIDIA devices) still reaches
stderr. Once per process.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

#: Start-up lines that say nothing is wrong on a machine without a GPU (or with one in use).
_BENIGN = (
    re.compile(r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$"),
    re.compile(r"^[IW]\d{4} [\d:. ]+\d+ \S+\] oneDNN custom operations are on"),
    re.compile(r"^[IW]\d{4} [\d:. ]+\d+ \S+\] Could not find cuda drivers on your machine"),
    re.compile(r"^[IW]\d{4} [\d:. ]+\d+ \S+\] (This )?TensorFlow binary is optimized to use available CPU"),
    re.compile(r"^To enable the following instructions: .* in other operations, rebuild TensorFlow"),
)
#: Benign only where the machine has no NVIDIA device: there, no GPU was to be found.
_NO_GPU_ONLY = re.compile(r"^E\d{4} [\d:. ]+\d+ \S+\] failed call to cuInit: ")

_imported: list[Any] = []
_listed: list[bool] = []


def has_nvidia_device() -> bool:
    return os.path.exists("/dev/nvidia0") or os.path.exists("/dev/nvidiactl")


def benign(line: str, *, nvidia: bool) -> bool:
    """Whether a start-up line is one of the known notices (see the module docstring)."""
    text = line.rstrip("\n")
    if any(p.match(text) for p in _BENIGN):
        return True
    return not nvidia and bool(_NO_GPU_ONLY.match(text))


@contextlib.contextmanager
def _fd2_captured() -> Iterator[list[str]]:
    """Descriptor 2 goes to a temporary file inside the block; its lines are in the list after it."""
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield lines
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            lines.extend(tmp.read().decode("utf-8", errors="replace").splitlines(keepends=True))


def import_tensorflow(*, list_gpus: bool = True) -> Any:
    """The ``tensorflow`` module, imported (with tf_keras) and its GPUs listed, notices filtered.

    ``list_gpus=False`` only imports: a process that forks workers afterwards must not have
    started CUDA (:mod:`xray_spark.worker_daemon`); each worker lists the GPUs itself.
    """
    if _imported and (_listed or not list_gpus):
        return _imported[0]
    with _fd2_captured() as lines:
        import tensorflow as tf
        import tf_keras  # noqa: F401  (Keras 2; its import prints the same notices)

        if list_gpus:
            tf.config.list_physical_devices("GPU")
            _listed.append(True)
    nvidia = has_nvidia_device()
    kept = "".join(line for line in lines if not benign(line, nvidia=nvidia))
    if kept:
        sys.stderr.write(kept)
        sys.stderr.flush()
    if not _imported:
        _imported.append(tf)
    return tf
