"""Served traffic for monitoring: the request log since a per-model watermark, grouped into
streams (served version and role) and cut into windows.

The watermark is a position per stream: (time, request id, row) of the last record a check
covered. A stream's records after it are new; they are cut into windows of `window_rows`, and a
trailing window of at least `min_rows` is checked too. A shorter tail is left for the next run
(insufficient data), so no record is skipped and none is checked twice. Records younger than
`settle_s` are left for the next run as well: a server may still be writing that second.
The watermark file is replaced atomically, and only after a successful check.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from deployments.request_log import REQUESTS, read_log
from tasks.serving.rollout import PROBE

Position = tuple[str, str, int]
START: Position = ("", "", -1)


def stream_key(version: int, role: str) -> str:
    return f"{version}/{role}"


def position(record: dict[str, Any]) -> Position:
    return (str(record["time"]), str(record["request_id"]), int(record.get("row", 0)))


def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def write_json(path: Path, data: Any) -> None:
    """Write `data` whole, fsync it, then rename it into place: readers never see a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    with tmp.open("w") as fh:
        json.dump(data, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


@dataclass
class Watermark:
    """Per stream, the position of the last record a check covered."""

    streams: dict[str, Position] = field(default_factory=dict)
    updated: str | None = None

    @classmethod
    def load(cls, path: Path) -> Watermark:
        if not path.is_file():
            return cls()
        try:
            data = json.loads(path.read_text())
            streams = {k: (str(v[0]), str(v[1]), int(v[2])) for k, v in data["streams"].items()}
            return cls(streams, data["updated"])
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise ValueError(
                f"{path}: not a monitoring watermark ({exc!r}); fix or remove it (removed: the "
                "whole request log is checked again)"
            ) from exc

    def save(self, path: Path) -> None:
        write_json(path, {"streams": self.streams, "updated": self.updated})

    def since(self) -> str | None:
        """The earliest time still needed: a known stream's position, or the last run's end
        (a stream first seen now has only records after it). None: the whole log."""
        times = [p[0] for p in self.streams.values()]
        if self.updated is not None:
            times.append(self.updated)
        return min(times) if times else None

    def advance(
        self, stream: str, checked: list[dict[str, Any]], pending: list[dict[str, Any]]
    ) -> None:
        """After a check: the stream's position moves past `checked`; a stream seen for the
        first time with nothing checked starts just before its first pending record."""
        if checked:
            self.streams[stream] = position(checked[-1])
        elif stream not in self.streams and pending:
            self.streams[stream] = (str(pending[0]["time"]), "", -1)


@dataclass
class Stream:
    version: int
    role: str
    records: list[dict[str, Any]]

    @property
    def key(self) -> str:
        return stream_key(self.version, self.role)


@dataclass
class Traffic:
    streams: list[Stream]
    skipped: list[str]  # corrupt or half-written lines: file, line and why
    until: str  # records after this were left for the next run


def read_traffic(
    log_dir: str | Path, model: str, mark: Watermark, settle_s: float, now: datetime | None = None
) -> Traffic:
    """The model's records that no check has covered yet, by stream, oldest first."""
    until = stamp((now or datetime.now(UTC)) - timedelta(seconds=settle_s))
    read = read_log(Path(log_dir) / REQUESTS, REQUESTS, since=mark.since())
    by_stream: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for record in read.records:
        if record.get("model") != model or str(record.get("time")) > until:
            continue
        if str(record.get("request_id", "")).startswith(PROBE):
            continue  # a rollout's readiness and smoke probes, not traffic
        try:
            key = (int(record["version"]), str(record["role"]))
            after = mark.streams.get(stream_key(*key), START)
            if position(record) <= after:
                continue
        except (KeyError, TypeError, ValueError):
            read.skipped.append(f"record {record.get('request_id')!r}: no version, role or row")
            continue
        by_stream.setdefault(key, []).append(record)
    streams = [
        Stream(version, role, sorted(records, key=position))
        for (version, role), records in sorted(by_stream.items())
    ]
    return Traffic(streams, read.skipped, until)


def windows(
    records: list[dict[str, Any]], size: int, min_rows: int
) -> tuple[list[list[dict[str, Any]]], list[dict[str, Any]]]:
    """Full windows of `size`, a trailing one if it has `min_rows`; and the rows left over."""
    cuts = [records[i : i + size] for i in range(0, len(records), size)]
    if cuts and len(cuts[-1]) < min_rows:
        return cuts[:-1], cuts[-1]
    return cuts, []


@contextmanager
def exclusive(folder: Path) -> Iterator[None]:
    """One monitoring pass per model at a time (a scheduled run and one asked for by hand
    would otherwise check the same records twice); waits for the other to finish."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
