"""The services as hospital IT runs them: systemd units that verify, run from ``/``, and are found by stop and status.

Where systemd is installed, ``systemd-analyze verify`` checks every unit. Everywhere, the DICOM
node's unit is run as systemd runs it (:func:`units.run_unit`: its ExecStart, WorkingDirectory
and Environment, in a session of its own), and ``status`` and ``stop``, given only the
configuration file, find it from another working directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from xray_spark import systemd
from xray_spark.session import free_port

from .conftest import ROOT
from .jobs import job_env
from .units import run_unit, unit_command


def _site(tmp_path: Path, port: int) -> Path:
    """A site's configuration in its own folder, every path relative to it."""
    conf = tmp_path / "etc" / "site.yaml"
    conf.parent.mkdir(parents=True)
    conf.write_text(
        f"lake: ../lake\nprivacy:\n  identity_dir: ../identity\ndicom_node:\n  spool: ../spool\n  port: {port}\n"
    )
    return conf


def test_the_units_pass_systemd_analyze_verify_and_install_writes_them(tmp_path):
    conf = _site(tmp_path, 11112)
    folder = tmp_path / "units"
    done = subprocess.run(
        [sys.executable, "-m", "xray_spark.systemd", "install", "--config", str(conf), "--dir", str(folder)],
        env=job_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(systemd.units(str(conf), user=False, home="/var/lib/xray-spark"))
    assert done.stdout.split() == [str(folder / n) for n in systemd.units(str(conf), user=False, home="/x")]
    assert "systemctl daemon-reload" in done.stderr
    nightly = (folder / "xray-spark-nightly.service").read_text()
    argv, env, cwd = unit_command(nightly)
    assert cwd == "/" and env["XRAY_SPARK_HOME"] == "/var/lib/xray-spark" and "--config" in argv
    assert argv[argv.index("--config") + 1] == str(conf) and argv[-2:] == ["--source", "dicom"]
    assert "OnCalendar=*-*-* 02:00:00" in (folder / "xray-spark-nightly.timer").read_text()
    analyze = shutil.which("systemd-analyze")
    if analyze is None:  # not every machine runs systemd; the units are still run below as it would run them
        pytest.skip("systemd-analyze is not installed here")
    checked = subprocess.run(
        [analyze, "verify", "--man=no", *sorted(str(p) for p in folder.iterdir())],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=folder,
    )
    assert checked.returncode == 0 and not checked.stderr.strip(), checked.stderr
    # the check can fail: a unit whose program is not there is refused
    broken = tmp_path / "broken.service"
    broken.write_text(nightly.replace(argv[0], "/nonexistent/xray-spark"))
    refused = subprocess.run([analyze, "verify", "--man=no", str(broken)], capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "/nonexistent/xray-spark" in refused.stderr


def test_the_node_unit_runs_from_root_and_stop_and_status_find_it_from_its_settings(tmp_path):
    port = free_port()
    conf = _site(tmp_path, port)
    home = tmp_path / "home"
    text = systemd.units(str(conf), user=True, home=str(home))["xray-spark-dicom-node.service"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def node(*args: str, cwd: Path = elsewhere) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "xray_spark.node", *args]
        env = job_env({"XRAY_SPARK_HOME": str(home)})
        return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)

    with run_unit(text) as proc:
        deadline = time.monotonic() + 60
        while (status := node("status", "--config", str(conf))).returncode != 0:
            assert proc.poll() is None and time.monotonic() < deadline, status.stderr
            time.sleep(0.3)
        state = json.loads(status.stdout)
        assert state["pid"] == proc.pid and state["listening"] == f"XRAY_SPARK@127.0.0.1:{port}"
        assert state["spool"] == str(tmp_path / "spool"), "the file's relative spool, not one under / (its cwd)"
        assert (tmp_path / "spool").is_dir() and not (Path("/") / "spool").exists()
        # another spool: not this node; it says which one runs, and where
        other = node("stop", "--config", str(conf), "--spool", str(tmp_path / "other"))
        assert other.returncode == 3 and "started with other settings runs" in other.stderr
        assert f"spool {tmp_path / 'spool'}" in other.stderr and proc.poll() is None
        # stop, from the repository: the node ends (reaped here, as systemd reaps its services) and stop says so
        stopping = subprocess.Popen(
            [sys.executable, "-m", "xray_spark.node", "stop", "--config", str(conf)],
            cwd=ROOT,
            env=job_env({"XRAY_SPARK_HOME": str(home)}),
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.wait(timeout=60) == 0
        _, said = stopping.communicate(timeout=60)
        assert stopping.returncode == 0 and "stopped" in said
    assert node("status", "--config", str(conf)).returncode == 3


def test_an_option_never_swallows_the_command_word(tmp_path):
    """``--allow`` takes one value (repeat it for more): ``--allow X status`` is the status command."""
    from xray_spark.node.__main__ import _arg_parser

    args = _arg_parser().parse_args(["--allow", "PACS@127.0.0.1", "status"])
    assert args.command == "status" and args.allow == ["PACS@127.0.0.1"]
    with contextlib.redirect_stderr(open(os.devnull, "w")), pytest.raises(SystemExit):
        _arg_parser().parse_args(["--allow", "PACS@127.0.0.1", "ROUTER@127.0.0.2"])  # not a command: refused
