"""Feature tables published as versioned snapshots behind one pointer.

    <output>/snapshots/<id>/features/<table>/part-*.parquet   one run's tables, never changed
    <output>/snapshots/.staging-<id>/                         a run being built (invisible)
    <output>/CURRENT                                          the published snapshot's id
    <output>/quarantine/<id>/<table>/                         the rows run <id> rejected

A run builds under a staging folder, renames it to `snapshots/<id>` (still invisible), and
becomes visible when CURRENT is replaced by a single rename: readers resolve CURRENT once and
read one snapshot, old or new, never a mix. Older snapshots and quarantine folders are pruned,
keeping the newest few. An output written before snapshots existed (`<output>/features/`) is
read as it is until the first snapshot is published.
"""

from __future__ import annotations

import errno
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import fsspec

CURRENT = "CURRENT"
SNAPSHOTS = "snapshots"
QUARANTINE = "quarantine"
FEATURES = "features"
LABELS = "labels"  # the labelled event rows, a table beside the feature tables


class OutOfSpace(OSError):
    """The output's device or quota is full; the message says what stays published."""


def out_of_space(exc: BaseException | None) -> bool:
    """Whether `exc`, or what caused it, is a full device or quota (pyarrow and Dask wrap it)."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(exc) or "Disk quota exceeded" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


@contextmanager
def explained_out_of_space(output_uri: str, snapshot: str) -> Iterator[None]:
    """A full device while building or publishing `snapshot` becomes one clear OutOfSpace."""
    try:
        yield
    except OutOfSpace:
        raise
    except Exception as exc:  # an interrupt stays an interrupt, whatever its context
        if not out_of_space(exc):
            raise
        published = current_snapshot(output_uri)
        outcome = (
            "it was published, and cleaning up after it failed"
            if published == snapshot
            else "nothing of it was published, and the published snapshot is still "
            f"{published or '(none yet)'}"
        )
        raise OutOfSpace(
            errno.ENOSPC,
            f"{output_uri}: no space left on the device while writing snapshot {snapshot}; "
            f"{outcome}",
        ) from exc


def _fs(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, path = fsspec.core.url_to_fs(uri)
    return fs, path.rstrip("/")


def _join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts])


def absolute_uri(uri: str) -> str:
    """A local path made absolute (how Feast's sources name it); other URIs unchanged."""
    return uri if "://" in uri else os.path.abspath(uri)


def new_snapshot_id(now: datetime | None = None) -> str:
    """Sortable by time, unique across concurrent runs."""
    return f"{(now or datetime.now(UTC)):%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:6]}"


def staging_uri(output_uri: str, snapshot: str) -> str:
    return _join(output_uri, SNAPSHOTS, f".staging-{snapshot}")


def snapshot_uri(output_uri: str, snapshot: str) -> str:
    return _join(output_uri, SNAPSHOTS, snapshot)


def current_snapshot(output_uri: str) -> str | None:
    """The published snapshot's id, None before the first publish."""
    fs, root = _fs(output_uri)
    try:
        with fs.open(_join(root, CURRENT), "r") as fh:
            return str(json.load(fh)["snapshot"])
    except FileNotFoundError:
        return None


def features_uri(output_uri: str, snapshot: str | None = None) -> str:
    """Where the tables of `snapshot` (default: the published one) lie; the legacy
    `<output>/features` when nothing was published as a snapshot."""
    snapshot = snapshot or current_snapshot(output_uri)
    if snapshot is None:
        return _join(output_uri, FEATURES)
    return _join(snapshot_uri(output_uri, snapshot), FEATURES)


def _logical(path: str) -> tuple[str, str] | None:
    """`(<output>, <table>)` of a logical table path `<output>/features/<table>`."""
    head, _, table = path.rstrip("/").rpartition("/")
    output, _, folder = head.rpartition("/")
    return (output, table) if folder == FEATURES and output else None


def resolve_table_path(path: str, pins: dict[str, str] | None = None) -> str:
    """A logical table path `<output>/features/<table>` as the physical one: in the snapshot
    pinned for `<output>`, else in the published one."""
    logical = _logical(path)
    if logical is None:
        return path
    output, table = logical
    return _join(features_uri(output, (pins or {}).get(output)), table)


def pin_published(paths: list[str], pins: dict[str, str] | None = None) -> dict[str, str]:
    """`pins` plus, for every other output behind the logical `paths`, the snapshot published
    now: a read that resolves through them sees one snapshot per output, whatever is
    published meanwhile."""
    pinned = dict(pins or {})
    for output in {logical[0] for p in paths if (logical := _logical(p)) is not None}:
        if output not in pinned and (snapshot := current_snapshot(output)) is not None:
            pinned[output] = snapshot
    return pinned


def seal(staging: str, output_uri: str, snapshot: str) -> str:
    """Rename a complete staging folder to its snapshot folder (not yet published)."""
    fs, src = _fs(staging)
    dst = _fs(snapshot_uri(output_uri, snapshot))[1]
    fs.mv(src, dst, recursive=True)
    return snapshot_uri(output_uri, snapshot)


def switch(output_uri: str, snapshot: str) -> str | None:
    """Publish `snapshot` by replacing CURRENT in one step; returns the previous id.

    Locally a rename (atomic); on an object store a single PUT, which readers see whole.
    """
    fs, root = _fs(output_uri)
    previous = current_snapshot(output_uri)
    body = json.dumps({"snapshot": snapshot, "published_at": datetime.now(UTC).isoformat()})
    if "file" in fs.protocol or "local" in fs.protocol:
        tmp = _join(root, f".{CURRENT}.{uuid.uuid4().hex}")
        try:
            with open(tmp, "w") as fh:
                fh.write(body)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, _join(root, CURRENT))
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
    else:
        fs.pipe(_join(root, CURRENT), body.encode())
    return previous


def keep_quarantine(staging: str, output_uri: str, run: str) -> str | None:
    """Move a run's quarantined rows out of its staging folder, kept whatever the run's outcome."""
    fs, src = _fs(_join(staging, QUARANTINE))
    if not fs.exists(src):
        return None
    dst = _join(output_uri, QUARANTINE, run)
    fs.makedirs(_fs(_join(output_uri, QUARANTINE))[1], exist_ok=True)
    fs.mv(src, _fs(dst)[1], recursive=True)
    return dst


def _children(fs: fsspec.AbstractFileSystem, folder: str) -> list[str]:
    if not fs.exists(folder):
        return []
    return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(folder, detail=False))


def prune(output_uri: str, keep: int) -> list[str]:
    """Delete published snapshots older than the newest `keep` (never the current one),
    staging folders of runs that started before it (interrupted), and all but the newest
    `keep` quarantine folders; returns what went. Newer, unpublished snapshots are left alone:
    a concurrent run may be about to publish one."""
    fs, root = _fs(output_uri)
    current = current_snapshot(output_uri)
    if current is None:
        return []
    names = _children(fs, _join(root, SNAPSHOTS))
    published = [s for s in names if not s.startswith(".") and s <= current]
    stale = [
        s for s in names if s.startswith(".staging-") and s.removeprefix(".staging-") < current
    ]
    gone = []
    for name in [*published[: -max(keep, 1)], *stale]:
        fs.rm(_join(root, SNAPSHOTS, name), recursive=True)
        gone.append(_join(output_uri, SNAPSHOTS, name))
    runs = _children(fs, _join(root, QUARANTINE))
    for name in runs[: -max(keep, 1)]:
        fs.rm(_join(root, QUARANTINE, name), recursive=True)
        gone.append(_join(output_uri, QUARANTINE, name))
    return gone


def discard(uri: str) -> None:
    fs, path = _fs(uri)
    if fs.exists(path):
        fs.rm(path, recursive=True)
