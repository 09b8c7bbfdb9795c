"""The image source seam: every source named once, in ``prepare.sources.SOURCES``; the jobs and prepare ask it."""

from __future__ import annotations

import ast
import sys
import types

import pytest

from xray_spark.errors import UsageError
from xray_spark.prepare import sources
from xray_spark.prepare.pipeline import check_inputs
from xray_spark.prepare.run import PrepareInputs

from .conftest import ROOT, make_settings


@pytest.fixture
def fake_source(monkeypatch, tmp_path):
    """A source of the test's own: a module with read and tonight, and its one entry in SOURCES."""
    module = types.ModuleType("fake_xray_source")
    module.read = lambda run: pytest.fail("not read here")
    module.tonight = lambda folder, settings: PrepareInputs(None, str(folder), incremental=True, source="fake")
    monkeypatch.setitem(sys.modules, "fake_xray_source", module)
    entry = sources.ImageSource("fake", "fake_xray_source", "films of the test", self_describing=True, identified=False)
    monkeypatch.setitem(sources.SOURCES, "fake", entry)
    return entry


def test_a_new_source_is_one_entry_and_the_jobs_and_prepare_take_it(fake_source, tmp_path):
    from xray_spark.jobs import nightly, prepare
    from xray_spark.prepare.night import tonights_inputs

    for job in (prepare, nightly):
        parsed = job._arg_parser().parse_args(["--source", "fake", "--images", str(tmp_path)])
        assert parsed.source == "fake"
    assert "fake: films of the test" in prepare._arg_parser().format_help()
    inputs = tonights_inputs(str(tmp_path), "fake", make_settings(tmp_path / "lake"))
    assert (inputs.source, inputs.images, inputs.metadata) == ("fake", str(tmp_path), None)
    check_inputs(PrepareInputs(None, str(tmp_path), source="fake"))  # self-describing: no metadata CSV needed
    with pytest.raises(UsageError, match="--source must be nih or dicom or fake, got 'faker'"):
        check_inputs(PrepareInputs(None, str(tmp_path), source="faker"))


def test_no_module_outside_the_sources_names_a_source():
    """``--source`` values are written in ``prepare/sources/`` only: the jobs, prepare and the nightly flow ask
    ``SOURCES`` (what a source is: self-describing, carrying identity), never compare with a source's name."""
    names = set(sources.SOURCES)
    places = [ROOT / "xray_spark" / "jobs" / f for f in ("prepare.py", "nightly.py")]
    places += [ROOT / "xray_spark" / "prepare" / f for f in ("pipeline.py", "night.py", "run.py", "load.py")]
    found = []
    for path in places:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare) and any(
                isinstance(c, ast.Constant) and c.value in names for c in [node.left, *node.comparators]
            ):
                found.append(f"{path.name}:{node.lineno}")
    assert not found, f"a source compared by name: {found}"
