"""The Spark session: in local mode nothing listens beyond loopback, the web UI included."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from .jobs import job_env


def _listening(pids: set[int]) -> list[str]:
    """host:port of every listening TCP socket that one of ``pids`` holds."""
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        with open(table) as fh:
            for line in fh.readlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and cols[9] in inodes:  # LISTEN
                    host, port = cols[1].split(":")
                    found.append(f"{_address(host, width)}:{int(port, 16)}")
    return found


def _address(hex_host: str, width: int) -> str:
    raw = bytes.fromhex(hex_host)
    if width == 8:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


def _descendants(pid: int) -> set[int]:
    from xray_spark.dev.cluster import process_tree

    return set(process_tree(pid))


LOOPBACK = ("127.0.0.1", "::1", "::ffff:127.0.0.1")


def test_local_mode_listens_on_loopback_only_ui_included(tmp_path):
    script = (
        "import sys\n"
        "from xray_spark.config import load_settings\n"
        "from xray_spark.session import build_session\n"
        "s = load_settings(None, ['spark.master=local[1]', 'spark.driver_memory=512m',\n"
        '    \'spark.conf={spark.ui.enabled: "true", spark.ui.port: "0"}\'])\n'
        "spark = build_session(s.spark)\n"
        "print(spark.sparkContext.uiWebUrl, flush=True)\n"
        "sys.stdin.read()\n"
    )
    env = {k: v for k, v in job_env().items() if k != "SPARK_LOCAL_IP"}
    proc = subprocess.Popen(
        [sys.executable, "-c", script], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        ui = proc.stdout.readline().strip()
        assert ui.startswith("http://"), "the UI was asked for and is on"
        listening = _listening(_descendants(proc.pid))
        assert listening, "the driver listens on some ports"
        assert all(addr.rsplit(":", 1)[0] in LOOPBACK for addr in listening), listening
        ui_port = int(ui.rsplit(":", 1)[1])
        assert any(addr.endswith(f":{ui_port}") for addr in listening)
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
