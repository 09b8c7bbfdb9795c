"""Where a command's CPU goes, by kind of process: run it (by default the test suite) and sample /proc once a second.

    python bench/suite_cpu.py --out bench/results/suite_cpu.json -- make test

Each process is counted under the kind of its last command line seen (a JVM started through spark-submit's shell
scripts is a JVM); a process that lives less than a second may be missed. Every process of the machine is counted:
run it on a machine that does nothing else. The summary is JSON on stdout and in
``--out``: the command's wall seconds, the busy CPU seconds of the whole machine (steal excluded) and the CPU
seconds of each kind. Linux only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

HZ = os.sysconf("SC_CLK_TCK")
#: (kind, words of the command line that make it): the first that matches wins.
KINDS = (
    ("JVM: standalone cluster", ("deploy.master", "deploy.worker", "CoarseGrainedExecutorBackend")),
    ("JVM: Spark driver", ("org.apache.spark.deploy.SparkSubmit",)),
    ("JVM: other", ("/bin/java",)),
    ("Python: Spark workers", ("pyspark.daemon", "pyspark.worker")),
    ("Python: barrier training workers", ("xray_spark.train.barrier",)),
    ("Python: test processes", ("execnet", "import sys;exec(eval(sys.stdin.readline()))", "pytest")),
    ("Python: jobs and services", ("/jobs/", "-m xray_spark.")),
    ("browser", ("chrom",)),
    ("DICOM peers", ("Orthanc", "storescp", "dcmsend", "storescu")),
)


def kind_of(command: str) -> str:
    return next((kind for kind, words in KINDS if any(w in command for w in words)), "other")


def busy_ticks() -> int:
    """The machine's busy ticks: user, nice, system, irq and softirq (idle, iowait and steal left out)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[:7])
    return user + nice + system + irq + softirq


class Sampler:
    def __init__(self) -> None:
        self.ticks: dict[tuple[int, int], int] = {}
        self.base: dict[tuple[int, int], int] = {}
        self.command: dict[tuple[int, int], str] = {}
        self.stop = threading.Event()

    def _read(self) -> dict[tuple[int, int], tuple[int, str]]:
        seen = {}
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            seen[(int(pid), int(stat[19]))] = (int(stat[11]) + int(stat[12]), command)
        return seen

    def start(self) -> None:
        self.base = {key: ticks for key, (ticks, _) in self._read().items()}  # what ran before is not counted
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self.stop.wait(1.0):
            self.tick()

    def tick(self) -> None:
        for key, (ticks, command) in self._read().items():
            self.ticks[key] = ticks - self.base.get(key, 0)
            if command.strip():
                self.command[key] = command

    def by_kind(self) -> dict[str, float]:
        totals: Counter[str] = Counter()
        for key, ticks in self.ticks.items():
            totals[kind_of(self.command.get(key, ""))] += ticks
        return {kind: round(ticks / HZ, 1) for kind, ticks in totals.most_common()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="also write the summary here")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command (default: make test)")
    args = parser.parse_args(argv)
    command = [c for c in args.command if c != "--"] or ["make", "test"]
    sampler = Sampler()
    sampler.start()
    busy, started = busy_ticks(), time.monotonic()
    returncode = subprocess.call(command, stdout=sys.stderr)
    wall, busy = time.monotonic() - started, (busy_ticks() - busy) / HZ
    sampler.stop.set()
    sampler.tick()
    summary = {
        "command": " ".join(command),
        "exit": returncode,
        "wall_seconds": round(wall),
        "busy_cpu_seconds": round(busy),
        "cores": os.cpu_count(),
        "cpu_seconds_by_kind": sampler.by_kind(),
    }
    text = json.dumps(summary, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return returncode


if __name__ == "__main__":
    sys.exit(main())
