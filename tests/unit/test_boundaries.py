"""The layout's boundaries: the logic imports no Prefect, features/ loads without it, and the
banned-import rules hold. (deployments/ in the serving interpreter: tests/integration.)"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import tasks

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
WRAPPERS = "prefect_tasks"


def plain_modules() -> list[str]:
    """Every module of tasks/ except the stages' Prefect task wrappers."""
    found = pkgutil.walk_packages(tasks.__path__, prefix="tasks.")
    return sorted(m.name for m in found if m.name.rsplit(".", 1)[-1] != WRAPPERS)


# Imports the modules one by one; names the first whose import brought `banned` in.
_FIRST_IMPORTER = """
import importlib, json, sys
banned, modules = sys.argv[1], json.loads(sys.argv[2])
for name in modules:
    importlib.import_module(name)
    if banned in sys.modules:
        print(name)
        break
"""


def first_importer(modules: list[str], banned: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", _FIRST_IMPORTER, banned, json.dumps(modules)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_logic_of_every_stage_imports_no_prefect() -> None:
    modules = plain_modules()
    assert "tasks.feature_store.store" in modules and "tasks.data.preprocess" in modules
    assert first_importer(modules, "prefect") == ""


def test_each_stage_has_its_prefect_tasks_in_one_module() -> None:
    stages = [p.parent.name for p in (ROOT / "tasks").glob(f"*/{WRAPPERS}.py")]
    assert sorted(stages) == [
        "data",
        "feature_store",
        "monitoring",
        "serving",
        "training",
        "validation",
    ]
    flows = "\n".join(p.read_text() for p in (ROOT / "flows").glob("*.py"))
    assert "@task" not in flows and "= task(" not in flows


def test_loading_the_feast_repository_imports_no_prefect() -> None:
    """What `feast plan` / `feast apply` do: import features/repo.py from the repo folder."""
    code = (
        "import runpy, sys; runpy.run_path('features/repo.py');"
        "print(sorted(m for m in ('prefect', 'prefect_dask') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_banned_import_rules_hold() -> None:
    """ruff TID251: Prefect only in flows/, blocks/ and prefect_tasks.py; deployments/ imports
    none of Prefect, Feast, Dask or the platform (deployments/ruff.toml)."""
    ruff = Path(sys.executable).with_name("ruff")
    done = subprocess.run(
        [str(ruff), "check", "--select", "TID251", "--output-format", "concise", "."],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
