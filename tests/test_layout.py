"""The package's shape: one folder per job, stages that do not import each other, no cycles, short functions.

These are the rules of docs/architecture.md, checked on the source itself.
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from pathlib import Path

import pytest

from .conftest import ROOT

PACKAGE = ROOT / "xray_spark"
ENTRY_POINTS = {
    "prepare": "run_prepare",
    "train": "run_training",
    "score": "run_scoring",
    "evaluate": "run_evaluation",
    "worklist": "run_worklist",
    "deliver": "run_delivery",
    "challenge": "run_challenge",
    "monitor": "run_monitor",
}
STAGES = tuple(ENTRY_POINTS)
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 450
#: Helpers that once had several copies: each must be defined exactly once.
SINGLE_HOMES = ("new_run_id", "first_line", "free_port", "probability_column", "temporary_conf", "local_path")


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(path: Path) -> set[str]:
    """Every xray_spark module ``path`` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("xray_spark"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("xray_spark"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    modules = _modules()
    return {name for name in found if name in modules}


#: The core's rooms: subpackages of modules that belong together (the lake and its tables), core like the rest.
CORE_ROOMS = ("lake", "config", "imaging", "pages", "onnx")


def _layer(module: str) -> str:
    """``core`` for the shared modules (a core room's too), else the package: a stage, a service or ``dev``."""
    parts = module.split(".")
    if len(parts) >= 2 and parts[1] in CORE_ROOMS:
        return "core"
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in (*STAGES, "dev", "jobs")) else "core"


def test_the_tree_has_one_package_per_job_and_a_pipeline_in_each():
    for stage, entry in ENTRY_POINTS.items():
        assert f"def {entry}(" in (PACKAGE / stage / "pipeline.py").read_text(), stage
    assert (PACKAGE / "dev" / "synthetic.py").is_file() and (PACKAGE / "dev" / "cluster.py").is_file()


@pytest.mark.parametrize("stage", STAGES)
def test_every_entry_point_takes_spark_lake_settings_first(stage):
    tree = ast.parse((PACKAGE / stage / "pipeline.py").read_text())
    entry = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == ENTRY_POINTS[stage])
    assert [a.arg for a in entry.args.args[:3]] == ["spark", "lake", "settings"]


def test_no_stage_imports_another_and_the_core_imports_no_stage():
    wrong = []
    for module, path in _modules().items():
        mine = _layer(module)
        for target in _imports(path):
            theirs = _layer(target)
            if theirs == mine or theirs == "core":
                continue
            if mine in ("dev", "jobs"):  # demo and test tools, and the jobs' command lines, use the stages
                continue
            wrong.append(f"{module} -> {target}")
    assert not wrong, "layering broken: " + ", ".join(wrong)


def test_the_demo_and_test_tools_stay_out_of_the_products_import_graph():
    users = [m for m, p in _modules().items() if _layer(m) != "dev" and any(_layer(t) == "dev" for t in _imports(p))]
    assert not users, f"the product imports xray_spark.dev: {users}"


def test_a_core_module_that_one_package_alone_uses_lives_in_that_package():
    """The flat core holds what several packages share; a module only one stage or service imports is moved there
    (a room's modules and modules used by other core modules stay)."""
    modules = _modules()
    users: dict[str, set[str]] = {}
    for module, path in modules.items():
        parts = module.split(".")
        package = parts[1] if len(parts) > 2 or (len(parts) == 2 and path.name == "__init__.py") else module
        for target in _imports(path):
            users.setdefault(target, set()).add(package)
    alone = []
    for module, path in modules.items():
        parts = module.split(".")
        if len(parts) != 2 or path.name == "__init__.py" or _layer(module) != "core":
            continue
        mine = users.get(module, set()) - {module}
        user = next(iter(mine), "")
        if len(mine) == 1 and not user.startswith("xray_spark") and _layer(f"xray_spark.{user}.x") != "core":
            alone.append(f"{module} (only {user})")
    assert not alone, alone


def test_no_import_cycles():
    modules = _modules()
    # A module importing its own package (its __init__) is not a cycle through it.
    graph = {m: {t for t in _imports(p) if t != m and not m.startswith(t + ".")} for m, p in modules.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*trail[trail.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, cycles


def test_functions_and_modules_stay_short():
    long_functions, long_modules = [], []
    for module, path in _modules().items():
        text = path.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            long_modules.append(f"{module} ({len(text.splitlines())} lines)")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long_functions.append(f"{module}.{node.name} ({length} lines)")
    assert not long_functions, long_functions
    assert not long_modules, long_modules


def test_each_shared_helper_has_one_home():
    defined = Counter()
    for path in _modules().values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name in SINGLE_HOMES:
                defined[node.name] += 1
    assert defined == Counter(dict.fromkeys(SINGLE_HOMES, 1))


#: Import names whose distribution is named otherwise.
DISTRIBUTIONS = {"cv2": "opencv-python-headless", "sklearn": "scikit-learn", "yaml": "pyyaml", "impala": "impyla"}


def test_every_runtime_import_is_a_declared_dependency():
    import sys
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[<>=\[ ]", d)[0].lower().replace("_", "-") for d in declared}
    imported = set()
    for path in _modules().values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module.split(".")[0])
    third_party = {m for m in imported if m not in sys.stdlib_module_names and m != "xray_spark"}
    missing = sorted(m for m in third_party if DISTRIBUTIONS.get(m, m).lower().replace("_", "-") not in names)
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_jobs_stay_thin():
    for job in sorted([*(ROOT / "jobs").glob("*.py"), *(PACKAGE / "jobs").glob("*.py")]):
        assert len(job.read_text().splitlines()) <= 120, f"{job.name} holds logic that belongs in xray_spark"


def test_every_job_file_is_a_launcher_job_and_its_wrapper_runs_the_packaged_one():
    from xray_spark.launch import JOBS

    packaged = {p.stem for p in (PACKAGE / "jobs").glob("*.py") if p.stem != "__init__"}
    assert packaged == set(JOBS) == {p.stem for p in (ROOT / "jobs").glob("*.py")}
    for job in JOBS:
        assert f"from xray_spark.jobs.{job} import main" in (ROOT / "jobs" / f"{job}.py").read_text()


def test_the_makefile_runs_every_job_through_the_launcher_with_the_drivers_jvm_options():
    from xray_spark.launch import submit_command
    from xray_spark.session import DRIVER_JVM_OPTIONS

    makefile = (ROOT / "Makefile").read_text()
    assert "spark-submit jobs/" not in makefile and "$(XRAY) prepare" in makefile
    command = submit_command("score", ["--new-only"])
    options = command[command.index("--driver-java-options") + 1]
    assert DRIVER_JVM_OPTIONS in options, "make's jobs and python jobs/*.py run the same driver JVM"
