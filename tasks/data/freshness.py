"""Is there new data? What a retraining asks before it runs data_prep again, and what
data_prep's `mlops.dataset.updated` event reports."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import fsspec
import pyarrow.dataset as ds

from tasks.data.publish import LABELS, current_snapshot, features_uri


def snapshot_time(snapshot: str) -> datetime:
    """When a snapshot's run started (its id begins with that UTC stamp)."""
    return datetime.strptime(snapshot.split("-")[0], "%Y%m%dT%H%M%S%fZ").replace(tzinfo=UTC)


def _modified(info: dict[str, Any]) -> datetime | None:
    for key in ("mtime", "LastModified", "last_modified", "updated"):
        value = info.get(key)
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=UTC)
        if isinstance(value, int | float):
            return datetime.fromtimestamp(value, UTC)
    return None


def newer_source_files(
    source_uri: str, output_uri: str, storage_options: dict[str, Any] | None = None
) -> list[str]:
    """Source files written after the published snapshot's run started (all files when nothing
    is published). A store that reports no modification time counts as new."""
    snapshot = current_snapshot(output_uri)
    since = snapshot_time(snapshot) if snapshot else None
    fs, root = fsspec.core.url_to_fs(source_uri, **(storage_options or {}))
    newer = []
    for path, info in fs.find(root, detail=True).items():
        modified = _modified(info)
        if since is None or modified is None or modified > since:
            newer.append(path)
    return sorted(newer)


def labelled_rows(output_uri: str, snapshot: str | None) -> int:
    """Rows of a snapshot's labelled table (0 before the first snapshot)."""
    if snapshot is None:
        return 0
    fs, path = fsspec.core.url_to_fs(features_uri(output_uri, snapshot) + f"/{LABELS}")
    try:
        return int(ds.dataset(path, filesystem=fs, format="parquet").count_rows())
    except (FileNotFoundError, OSError):
        return 0
