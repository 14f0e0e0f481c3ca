"""A registry version as a local folder, which is what a serving process loads."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from tasks.registry.store import METADATA, Registry


def version_folder(registry: Registry, name: str, version: int, cache: str | Path) -> str:
    """The version's folder: the registry's own on a local filesystem, else a copy under
    `cache` (written whole, then renamed into place)."""
    if registry.local:
        return registry.version_path(name, version)
    target = Path(cache) / "versions" / str(version)
    if (target / METADATA).is_file():
        return str(target)
    staging = target.with_name(f".{version}.{uuid.uuid4().hex}")
    staging.mkdir(parents=True)
    try:
        info = registry.get(name, version)
        for file in [*info.files, METADATA]:
            (staging / file).write_bytes(registry.read(name, version, file))
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if not (target / METADATA).is_file():
            raise
    return str(target)
