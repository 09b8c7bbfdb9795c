"""Lakes the tests make for themselves from the session's prepared one."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from xray_spark.lake import Lake

from .conftest import make_settings


def copy_lake(prepared, dest: Path) -> tuple:
    """A private copy of the prepared lake (store, tables, models) that a test may damage."""
    _, lake, _ = prepared
    shutil.copytree(lake.root, dest, ignore=shutil.ignore_patterns("reports", "locks", "predictions", "_staging"))
    return make_settings(dest), Lake.at(str(dest))


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def own_scoring_lake(prepared, small_model, root: Path) -> tuple:
    """A lake of its own (sharing the store and the model) so a test module owns its predictions."""
    settings, base, _ = prepared
    os.symlink(Path(base.root) / "petastorm", root / "petastorm")
    shutil.copytree(Path(small_model["model_dir"]), root / "models" / small_model["version"])
    shutil.copytree(Path(base.root) / "tables" / "studies", root / "tables" / "studies")
    shutil.copytree(Path(base.root) / "tables" / "models", root / "tables" / "models")  # the model's registration
    return settings, Lake.at(str(root))
