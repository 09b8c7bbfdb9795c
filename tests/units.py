"""A systemd unit run the way systemd runs it, for machines (and test runs) without systemd as their init.

:func:`unit_command` reads a service's ExecStart, Environment and WorkingDirectory;
:func:`run_unit` starts it with those, in a session of its own (systemd calls setsid), with
nothing else from the test's environment but PATH and the product's home, and stops it by
its pid (SIGTERM, as ``systemctl stop`` does; SIGKILL if it outlives the unit's timeout).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
from collections.abc import Iterator


def unit_command(text: str) -> tuple[list[str], dict[str, str], str]:
    """(argv, environment, working directory) of a unit's [Service] section."""
    section, argv, env, cwd = "", [], {}, "/"
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif section == "Service" and "=" in line:
            key, value = line.split("=", 1)
            if key == "ExecStart":
                argv = shlex.split(value)
            elif key == "Environment":
                for item in shlex.split(value):
                    name, _, val = item.partition("=")
                    env[name] = val
            elif key == "WorkingDirectory":
                cwd = value
    assert argv, "the unit has no ExecStart"
    return argv, env, cwd


@contextlib.contextmanager
def run_unit(text: str, *, stop_timeout_s: float = 60) -> Iterator[subprocess.Popen]:
    argv, env, cwd = unit_command(text)
    base = {k: os.environ[k] for k in ("PATH", "LANG", "JAVA_HOME") if k in os.environ}
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env={**base, **env},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=stop_timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        if proc.stderr:
            proc.stderr.close()
