"""Every command the README and docs/ show is one the product takes: its make target, job, options and values.

Each shell line in a fenced block (continuations joined) that starts with one of the product's
commands is checked against the real thing: a ``make`` target against the Makefile, ``xray-spark
<job>``, ``spark-submit jobs/<job>.py`` and ``python -m xray_spark.<module>`` against the
argument parser they run, dcmtk's ``dcmsend`` and ``echoscu`` against their own ``--help``. A
synopsis (a line with ``[...]`` optional parts) must name only options that exist; a line a user
would copy must parse whole, its placeholders (``DIR``, ``SPOOL``, ``CHALLENGE_ID`` ...) standing
for values. The ``dcmsend`` line of docs/dicom-node.md is also run as it is, against a node
(``tests/test_dicom_node.py``), and the systemd units of docs/services.md in ``tests/test_systemd.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from xray_spark.launch import JOBS, split_argv

from .conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PROGRAMS = ("make", "xray-spark", "python", "spark-submit", "dcmsend", "echoscu")
#: python -m <module> -> the function that builds its parser
MODULES = {
    "xray_spark.node": "xray_spark.node.__main__",
    "xray_spark.node.pull": "xray_spark.node.pull",
    "xray_spark.audit": "xray_spark.audit",
    "xray_spark.server": "xray_spark.server.__main__",
    "xray_spark.web": "xray_spark.web.__main__",
    "xray_spark.systemd": "xray_spark.systemd",
    "xray_spark.dev.synthetic": "xray_spark.dev.synthetic",
    "xray_spark.config": "xray_spark.config.__main__",
}


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of each fenced block of a markdown page, fences paired in order."""
    blocks, language, body = [], None, []
    for line in text.splitlines():
        if line.startswith("```"):
            if language is None:
                language, body = line[3:].strip(), []
            else:
                blocks.append((language, "\n".join(body) + "\n"))
                language = None
        elif language is not None:
            body.append(line)
    return blocks


def shell_lines() -> list[tuple[str, str]]:
    """(page, command) of every line in a fenced block that starts with one of :data:`PROGRAMS`."""
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for _, block in fenced_blocks(text):
            for line in _joined(re.sub(r"\\\n\s*", " ", block).splitlines()):
                line = re.sub(r"\s#\s.*$", "", line).strip()
                for prefix in ("sudo ", ".venv/bin/", "$ "):
                    line = line.removeprefix(prefix)
                if line.split(" ", 1)[0] in PROGRAMS:
                    found.append((page.name, line))
    return found


def _joined(lines: list[str]) -> list[str]:
    """Lines, a quoted string that runs on to the next line joined with it."""
    out: list[str] = []
    for line in lines:
        if out and out[-1].count('"') % 2:
            out[-1] += " " + line.strip()
        else:
            out.append(line)
    return out


def _parser(module: str) -> argparse.ArgumentParser:
    made = importlib.import_module(module)
    if isinstance(getattr(made, "parser", None), argparse.ArgumentParser):
        return made.parser
    build = getattr(made, "_arg_parser", None)
    assert build is not None, f"{module} has no _arg_parser()"
    return build()


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {flag for action in parser._actions for flag in action.option_strings}


def _check_args(parser: argparse.ArgumentParser, args: list[str], line: str) -> None:
    """A synopsis names only options the parser has; a concrete line parses whole."""
    if any(a.startswith("[") or a.endswith("]") or a == "..." for a in args) or "|" in " ".join(args):
        words = [w for a in args for w in a.split("|")]
        named = {re.sub(r"[\[\]=].*$", "", w.lstrip("[")) for w in words if w.lstrip("[").startswith("--")} - {""}
        unknown = named - _options(parser)
        assert not unknown, f"{line!r} names options that do not exist: {sorted(unknown)}"
        return
    with contextlib.redirect_stderr(io.StringIO()) as said:
        try:
            parser.parse_args(args)
        except SystemExit as exc:
            if exc.code not in (0, None):
                pytest.fail(f"{line!r} does not parse: {said.getvalue().strip().splitlines()[-1:]}")


def _make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([a-z][a-z-]*):", text, flags=re.M))


def _check(line: str) -> None:
    words = shlex.split(line.replace("$(date +\\%F)", "2026-12-07").replace("$PWD", "/opt"))
    program, args = words[0], words[1:]
    if program == "make":
        targets = [a for a in args if "=" not in a and not a.startswith("-")]
        assert targets and set(targets) <= _make_targets(), f"{line!r}: no such make target"
    elif program == "xray-spark":
        submit, job, job_args, _ = split_argv(args)
        if job is None:
            assert submit in (["--help"], ["--class-archive"]), f"{line!r}: no job"
            return
        assert job in JOBS, f"{line!r}: no job {job!r}"
        _check_args(_parser(f"xray_spark.jobs.{job}"), job_args, line)
    elif program == "spark-submit":
        _, script, job_args, _ = split_argv(args)
        job = Path(str(script)).stem
        assert job in JOBS, f"{line!r}: no job {script!r}"
        _check_args(_parser(f"xray_spark.jobs.{job}"), job_args, line)
    elif program == "python":
        assert args[:1] == ["-m"] and args[1] in MODULES, f"{line!r}: a module the docs may not show"
        _check_args(_parser(MODULES[args[1]]), args[2:], line)
    else:  # dcmtk
        path = shutil.which(program)
        if path is None:
            return  # tests/test_dicom_node.py fails under CI without dcmtk
        help_text = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=30).stdout
        for flag in (a for a in args if a.startswith("-")):
            assert re.search(rf"(^|[\s,]){re.escape(flag)}([\s,]|$)", help_text, flags=re.M), f"{line!r}: {flag}?"


def docs_sql() -> list[tuple[str, str]]:
    """(page, statement) of every SQL query the README and docs/ show: ``sql`` blocks, ``xray-spark sql "..."``
    lines and ``beeline -e "..."`` lines (a synopsis's ``"SELECT ..."`` left out)."""
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for language, block in fenced_blocks(text):
            if language == "sql":
                plain = "\n".join(line for line in block.splitlines() if not line.lstrip().startswith("--"))
                found += [(page.name, s.strip()) for s in plain.split(";") if s.strip()]
                continue
            for line in _joined(re.sub(r"\\\n\s*", " ", block).splitlines()):
                quoted = re.search(r'(?:xray-spark sql(?: --\S+ \S+)* |beeline .*-e )"(.+?)"', line)
                if quoted and "..." not in quoted[1]:
                    found.append((page.name, " ".join(quoted[1].split())))
    return found


LINES = shell_lines()


def test_the_docs_show_commands_at_all():
    pages = {page for page, _ in LINES}
    assert len(LINES) > 40 and {"README.md", "dicom-node.md", "services.md", "query.md"} <= pages


@pytest.mark.parametrize(("page", "line"), LINES, ids=[f"{p}:{i}" for i, (p, _) in enumerate(LINES)])
def test_each_command_in_the_docs_is_one_the_product_takes(page, line):
    _check(line)


def test_the_check_refuses_a_stale_flag_a_missing_job_and_a_missing_target():
    for stale in (
        "xray-spark deliver --dataset hospital --to-node PACS@10.1.2.3:104",
        "xray-spark evaluate [--lake DIR] [--all-the-datasets]",
        "xray-spark deliverx --dataset hospital",
        "make dicom-nodes",
        "python -m xray_spark.node start --allow A@1.2.3.4 B@1.2.3.5",
    ):
        with pytest.raises(BaseException):  # noqa: B017 - pytest.fail's or an assertion's
            _check(stale)
