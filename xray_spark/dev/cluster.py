"""A Spark standalone cluster on this machine: one master and N workers.

``make cluster-up`` / ``make cluster-down`` (or ``python -m xray_spark.dev.cluster up|down``)
start and stop it from the installed pyspark (``spark-class ...deploy.master.Master`` and
``...deploy.worker.Worker``), bound to 127.0.0.1. Each worker gets a bounded number of
cores and memory. Logs, the workers' work folders and ``cluster.json`` (the master URL and
every process id with its start time) live in one state folder. ``down`` stops exactly the
processes that ``up`` recorded: a pid whose start time no longer matches (the process ended
and the number was reused) is left alone.

The same jobs then run against it unchanged: ``--config conf/standalone.yaml`` or
``--set spark.master=spark://127.0.0.1:7077``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from xray_spark.errors import EnvironmentProblem, UsageError
from xray_spark.session import LOOPBACK, check_java, free_port

STATE_FILE = "cluster.json"
HOST = LOOPBACK


@dataclasses.dataclass
class Process:
    role: str  # "master" or "worker-N"
    pid: int
    start_time: int  # clock ticks since boot (/proc/PID/stat field 22): tells a reused pid apart
    log: str
    web_port: int


@dataclasses.dataclass
class LocalCluster:
    state_dir: str
    master_url: str
    web_url: str
    cores_per_worker: int
    memory_per_worker: str
    processes: list[Process]

    @property
    def workers(self) -> list[Process]:
        return [p for p in self.processes if p.role.startswith("worker")]

    def save(self) -> None:
        path = Path(self.state_dir) / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(dataclasses.asdict(self), indent=2) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, state_dir: str | os.PathLike[str]) -> LocalCluster | None:
        path = Path(state_dir) / STATE_FILE
        if not path.exists():
            return None
        raw = json.loads(path.read_text())
        raw["processes"] = [Process(**p) for p in raw["processes"]]
        return cls(**raw)

    def status(self) -> dict:
        """The master's own view (``/json``): workers with their state, running applications."""
        with urllib.request.urlopen(self.web_url + "/json/", timeout=5) as response:
            return json.loads(response.read().decode("utf-8"))

    def alive_workers(self) -> int:
        try:
            return sum(1 for w in self.status().get("workers", []) if w.get("state") == "ALIVE")
        except OSError:
            return 0

    def work_dir(self, worker: Process) -> Path:
        return Path(self.state_dir) / worker.role / "work"


def spark_class() -> Path:
    import pyspark

    path = Path(pyspark.__file__).parent / "bin" / "spark-class"
    if not path.exists():
        raise EnvironmentProblem(f"{path} is missing: reinstall pyspark (make setup)")
    return path


def _start_time(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; the fields after its ')' are fixed.
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):  # ended, not yet reaped by its parent
        return None
    return int(fields[19])


def _parent(pid: str) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def process_tree(root: int) -> list[int]:
    """``root`` and every process below it (children, their children, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            parent = _parent(entry)
            if parent is not None:
                children.setdefault(parent, []).append(int(entry))
    tree, stack = [], [root]
    while stack:
        pid = stack.pop()
        tree.append(pid)
        stack.extend(children.get(pid, []))
    return tree


def is_running(proc: Process) -> bool:
    return _start_time(proc.pid) == proc.start_time


def _launch(role: str, args: list[str], state_dir: Path, web_port: int, env: dict[str, str]) -> Process:
    log = state_dir / f"{role}.log"
    with open(log, "ab") as out:
        popen = subprocess.Popen(
            [str(spark_class()), *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=state_dir,
            start_new_session=True,  # outlives `make cluster-up`; stopped by `down`
        )
    # spark-class ends in `exec java ...`: the pid is the JVM's. Its start time is read once
    # the exec has happened, so it identifies the JVM and not the shell before it.
    time.sleep(0.2)
    start = _start_time(popen.pid)
    if start is None:
        raise EnvironmentProblem(f"the Spark {role} exited at once: see {log}")
    return Process(role=role, pid=popen.pid, start_time=start, log=str(log), web_port=web_port)


def start(
    state_dir: str | os.PathLike[str],
    *,
    workers: int = 2,
    cores: int = 1,
    memory: str = "2g",
    port: int | None = None,
    web_port: int | None = None,
    timeout_s: float = 90,
) -> LocalCluster:
    """Start a master and ``workers`` workers; returns once every worker is registered."""
    state = Path(state_dir).resolve()
    state.mkdir(parents=True, exist_ok=True)
    existing = LocalCluster.load(state)
    if existing is not None and any(is_running(p) for p in existing.processes):
        raise UsageError(
            f"a cluster started from {state} is still running ({existing.master_url}): "
            f"stop it first (make cluster-down, or python -m xray_spark.dev.cluster down --dir {state})"
        )
    check_java()
    port = port or free_port()
    web_port = web_port or free_port()
    env = {
        **os.environ,
        "SPARK_LOCAL_IP": HOST,
        "SPARK_LOG_DIR": str(state),
        "SPARK_NO_DAEMONIZE": "1",
        "PYSPARK_PYTHON": os.environ.get("PYSPARK_PYTHON", sys.executable),
    }
    cluster = LocalCluster(
        state_dir=str(state),
        master_url=f"spark://{HOST}:{port}",
        web_url=f"http://{HOST}:{web_port}",
        cores_per_worker=cores,
        memory_per_worker=memory,
        processes=[],
    )
    master_args = ["org.apache.spark.deploy.master.Master", "--host", HOST, "--port", str(port)]
    cluster.processes.append(_launch("master", [*master_args, "--webui-port", str(web_port)], state, web_port, env))
    cluster.save()
    try:
        _wait(lambda: _accepts(HOST, port), timeout_s, f"the master did not open port {port}", cluster)
        for i in range(1, workers + 1):
            cluster.processes.append(start_worker(cluster, i, env))
            cluster.save()
        _wait(
            lambda: cluster.alive_workers() >= workers,
            timeout_s,
            f"{workers} workers did not register with the master",
            cluster,
        )
    except BaseException:
        stop(state)
        raise
    return cluster


def start_worker(cluster: LocalCluster, index: int, env: dict[str, str] | None = None) -> Process:
    state = Path(cluster.state_dir)
    role = f"worker-{index}"
    work = state / role / "work"
    work.mkdir(parents=True, exist_ok=True)
    web_port = free_port()
    args = [
        "org.apache.spark.deploy.worker.Worker",
        "--host",
        HOST,
        "--cores",
        str(cluster.cores_per_worker),
        "--memory",
        cluster.memory_per_worker,
        "--work-dir",
        str(work),
        "--webui-port",
        str(web_port),
        cluster.master_url,
    ]
    env = env or {**os.environ, "SPARK_LOCAL_IP": HOST, "SPARK_NO_DAEMONIZE": "1"}
    return _launch(role, args, state, web_port, env)


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _wait(ready, timeout_s: float, what: str, cluster: LocalCluster) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready():
            return
        dead = [p for p in cluster.processes if not is_running(p)]
        if dead:
            raise EnvironmentProblem(f"the Spark {dead[0].role} exited while starting: see {dead[0].log}")
        time.sleep(0.5)
    raise EnvironmentProblem(f"{what} within {timeout_s:.0f} s: see the logs in {cluster.state_dir}")


def stop_process(proc: Process, grace_s: float = 10) -> bool:
    """SIGTERM, then SIGKILL after ``grace_s``; only if the pid is still the recorded process."""
    if not is_running(proc):
        return False
    os.kill(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and is_running(proc):
        time.sleep(0.2)
    if is_running(proc):
        os.kill(proc.pid, signal.SIGKILL)
    return True


def stop(state_dir: str | os.PathLike[str]) -> list[str]:
    """Stop the processes recorded in ``state_dir`` (workers first); returns the roles stopped."""
    cluster = LocalCluster.load(state_dir)
    if cluster is None:
        return []
    stopped = [p.role for p in sorted(cluster.processes, key=lambda p: p.role == "master") if stop_process(p)]
    (Path(state_dir) / STATE_FILE).unlink(missing_ok=True)
    return stopped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xray_spark.dev.cluster", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start a master and workers on 127.0.0.1")
    up.add_argument("--dir", required=True, help="state folder: logs, work folders, cluster.json")
    up.add_argument("--workers", type=int, default=2)
    up.add_argument("--cores", type=int, default=1, help="cores per worker")
    up.add_argument("--memory", default="2g", help="memory per worker, e.g. 2g")
    up.add_argument("--port", type=int, default=7077, help="the master's port (0: any free port)")
    up.add_argument("--web-port", type=int, default=8080, help="the master's web UI port (0: any free port)")
    down = sub.add_parser("down", help="stop exactly the processes that 'up' started")
    down.add_argument("--dir", required=True)
    show = sub.add_parser("status", help="the master URL and the workers it sees")
    show.add_argument("--dir", required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            cluster = start(
                args.dir,
                workers=args.workers,
                cores=args.cores,
                memory=args.memory,
                port=args.port or None,
                web_port=args.web_port or None,
            )
            print(f"master {cluster.master_url} (web UI {cluster.web_url}), {len(cluster.workers)} workers")
            print(f"  {args.workers} x {args.cores} core(s), {args.memory}; logs and pids in {cluster.state_dir}")
        elif args.command == "down":
            stopped = stop(args.dir)
            print(f"stopped: {', '.join(stopped)}" if stopped else f"no running cluster recorded in {args.dir}")
        else:
            cluster = LocalCluster.load(args.dir)
            if cluster is None:
                print(f"no cluster recorded in {args.dir}")
                return 1
            running = [p.role for p in cluster.processes if is_running(p)]
            print(
                f"master {cluster.master_url}: running {', '.join(running) or 'nothing'}; "
                f"{cluster.alive_workers()} workers registered"
            )
    except (UsageError, EnvironmentProblem) as exc:
        print(f"cluster: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
