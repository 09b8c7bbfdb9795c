"""Distribution without Horovod: N TensorFlow workers as one Spark barrier stage.

Each barrier task builds a ``TF_CONFIG`` from the barrier task infos and runs
:func:`~xray_spark.train.loop.train_worker` in a child process; the workers exchange small
JSON messages through the task's ``allGather``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
from collections.abc import Callable
from typing import Any

from xray_spark.errors import XraySparkError, first_line
from xray_spark.session import free_port
from xray_spark.train.loop import train_worker
from xray_spark.train.plan import Cluster, TrainPlan


def barrier_task(plan_json: str) -> Callable:
    """The function each barrier task runs: TF_CONFIG from the task infos, then the loop.

    TensorFlow runs in a child process of the Spark Python worker, one per task: a
    reused Python worker still holds the previous run's collective server, and a second
    MultiWorkerMirroredStrategy in the same process would wait forever. The child asks
    the task for every ``allGather`` over a socket; it dies with its parent.
    """

    def run(_: Any) -> Any:
        from pyspark import BarrierTaskContext

        ctx = BarrierTaskContext.get()
        rank = ctx.partitionId()
        env = dict(os.environ)
        gpus = ctx.resources().get("gpu")
        if gpus is not None and gpus.addresses:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus.addresses)
        host = ctx.getTaskInfos()[rank].address.split(":")[0]
        addresses = list(ctx.allGather(f"{host}:{free_port('')}"))
        env["TF_CONFIG"] = json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": rank}})
        report, error = _run_child(
            env,
            {"plan": json.loads(plan_json), "rank": rank, "size": len(addresses)},
            gather=lambda v: list(ctx.allGather(v)),
        )
        if error is not None:
            raise RuntimeError(f"training worker {rank} failed: {error}")
        yield json.dumps(report)

    return run


def _run_child(
    env: dict[str, str], start: dict[str, Any], gather: Callable[[str], list[str]]
) -> tuple[dict[str, Any] | None, str | None]:
    """Run :func:`_child_main` in a fresh interpreter; serve its gathers; (report, error)."""
    import subprocess

    parent, child = socket.socketpair()
    with parent:
        proc = subprocess.Popen(
            [sys.executable, "-m", "xray_spark.train.barrier", "--worker-fd", str(child.fileno())],
            env=env,
            pass_fds=[child.fileno()],
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        child.close()
        reader, writer = parent.makefile("r", encoding="utf-8"), parent.makefile("w", encoding="utf-8")
        writer.write(json.dumps(start) + "\n")
        writer.flush()
        report = error = None
        for line in reader:
            message = json.loads(line)
            if message["type"] == "gather":
                writer.write(json.dumps(gather(message["value"])) + "\n")
                writer.flush()
            elif message["type"] == "report":
                report = message["value"]
            elif message["type"] == "error":
                error = message["value"]
        code = proc.wait()
    if error is None and (code != 0 or report is None):
        error = f"the training process exited with status {code}"
    return report, error


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    import contextlib
    import ctypes
    import signal

    with contextlib.suppress(OSError):  # not Linux: the child then outlives a killed task
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _child_main(fd: int) -> int:
    """The training process of one barrier task: read the plan, train, report."""
    from xray_spark.lake.store import quiet_petastorm_warnings

    quiet_petastorm_warnings()  # the reader's, on every row group, into the executor's log
    sock = socket.socket(fileno=fd)
    reader, writer = sock.makefile("r", encoding="utf-8"), sock.makefile("w", encoding="utf-8")
    start = json.loads(reader.readline())

    def gather(value: str) -> list[str]:
        writer.write(json.dumps({"type": "gather", "value": value}) + "\n")
        writer.flush()
        return json.loads(reader.readline())

    try:
        report = train_worker(TrainPlan.from_json(start["plan"]), Cluster(start["rank"], start["size"], gather=gather))
    except Exception as exc:
        writer.write(json.dumps({"type": "error", "value": f"{type(exc).__name__}: {exc}"}) + "\n")
        writer.flush()
        return 1
    writer.write(json.dumps({"type": "report", "value": report}) + "\n")
    writer.flush()
    return 0


def train_on_spark(spark: Any, plan: TrainPlan, num_workers: int) -> list[dict[str, Any]]:
    """Run ``num_workers`` TensorFlow workers as one Spark barrier stage; reports by rank."""
    rdd = spark.sparkContext.parallelize(range(num_workers), num_workers).barrier()
    plan_json = json.dumps(plan.to_json())
    try:
        reports = [json.loads(r) for r in rdd.mapPartitions(barrier_task(plan_json)).collect()]
    except Exception as exc:
        raise XraySparkError(f"a training worker failed: {first_line(exc)}") from exc
    return sorted(reports, key=lambda r: r["rank"])


if __name__ == "__main__":
    import argparse

    _parser = argparse.ArgumentParser(description="one training worker of a Spark barrier stage (internal)")
    _parser.add_argument("--worker-fd", type=int, required=True)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    sys.exit(_child_main(_parser.parse_args().worker_fd))
