"""Which pipelines a commit changed, and the `mlops.pipeline.updated` events CI emits for them.

A pipeline is a registered flow; it changed when a file it is made of changed: a repository
module its entrypoint imports (directly or not), a data file beside such a module, anything
under `features/` for a flow that loads dataset specs (the specs name their transforms and
generators as `module:function` strings, imported at run time), or what every flow is built
with (the lock files, `pyproject.toml`, `prefect.yaml`). Conservative: a change to one dataset
counts for every spec-loading flow.
"""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

EVENT = "mlops.pipeline.updated"
EVERY_PIPELINE = ("requirements.lock", "pyproject.toml", "prefect.yaml")
DATASETS = "features"  # dataset specs and the code they name
SPEC_LOADER = "tasks/specs/datasets.py"
NO_COMMIT = "0" * 40  # GitHub's `before` of a branch's first push


def module_files(entrypoint: str, root: Path) -> set[Path]:
    """The repository's Python files the entrypoint's module imports, transitively."""
    start = root / entrypoint.split(":")[0]
    seen: set[Path] = set()
    todo = [start]
    while todo:
        path = todo.pop()
        if path in seen or not path.exists():
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                base = root.joinpath(*name.split("."))
                for candidate in (base.with_suffix(".py"), base / "__init__.py"):
                    if candidate.exists():
                        todo.append(candidate)
    return seen


def changed_pipelines(
    changed: list[str], entrypoints: dict[str, str], root: Path
) -> dict[str, list[str]]:
    """Pipeline name -> the changed files (repository-relative) it is made of."""
    out: dict[str, list[str]] = {}
    for name, entrypoint in entrypoints.items():
        files = module_files(entrypoint, root)
        loads_specs = root / SPEC_LOADER in files
        folders = {f.parent for f in files if not f.is_relative_to(root / DATASETS)}
        mine = [
            c
            for c in changed
            if c in EVERY_PIPELINE
            or (root / c) in files
            or (loads_specs and c.startswith(f"{DATASETS}/"))
            or (not c.endswith(".py") and any((root / c).is_relative_to(d) for d in folders))
        ]
        if mine:
            out[name] = mine
    return out


def changed_files(before: str, commit: str, root: Path) -> list[str] | None:
    """Files changed between two commits; None when `before` is unknown (a first push, a
    shallow clone): then every pipeline counts as changed."""
    if not before or before == NO_COMMIT:
        return None
    done = subprocess.run(
        ["git", "-c", f"safe.directory={root}", "diff", "--name-only", before, commit],
        cwd=root,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        return None
    return [line for line in done.stdout.splitlines() if line]
