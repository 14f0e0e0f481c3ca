"""The request and labels logs: append-only JSON Lines segments that monitoring reads.

Format (the schema is data: deployments/request_log.schema.json, so a cluster sink can write
the same): one folder per log, files `<kind>-<UTC start>-<host>-<pid>-<n>.jsonl`, one JSON
object per line. A segment is written by one process only (gunicorn workers included: a writer
reopens after a fork), rotated by size and by age, and readable while written: a reader takes
every complete line and leaves a trailing partial one for later.

Durability: each call appends its records in one write(2) to a file opened with O_APPEND,
before the server answers. A killed server (SIGKILL included) loses no answered request, only
those it had not answered; a crash of the machine itself loses at most the last `fsync_s`
seconds (a background thread fsyncs the segment every `fsync_s`, and rotation fsyncs it).
"""

from __future__ import annotations

import json
import math
import os
import socket
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REQUESTS = "requests"
LABELS = "labels"
KINDS = (REQUESTS, LABELS)
SCHEMA = Path(__file__).with_name("request_log.schema.json")


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def jsonable(value: Any) -> Any:
    """A feature value as JSON: NaN and missing as null (JSON has no NaN)."""
    if value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return jsonable(value.item())
    return value


class SegmentWriter:
    """Appends records to the current segment of `folder`; thread-safe, fork-aware."""

    def __init__(
        self,
        folder: str | Path,
        kind: str,
        max_bytes: int = 64 * 2**20,
        max_age_s: float = 300.0,
        fsync_s: float = 1.0,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"log kind '{kind}' is not one of {KINDS}")
        self.folder = Path(folder)
        self.kind = kind
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.fsync_s = fsync_s
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._pid = -1
        self._opened = 0.0
        self._size = 0
        self._count = 0
        self._dirty = False
        self._syncing_pid = -1  # the process whose background fsync thread runs
        self.path: Path | None = None

    def append(self, records: Iterable[Mapping[str, Any]]) -> None:
        data = "".join(
            json.dumps(r, separators=(",", ":"), allow_nan=False) + "\n" for r in records
        )
        if not data:
            return
        payload = data.encode()
        with self._lock:
            now = time.monotonic()
            if self._fd is None or self._pid != os.getpid():
                self._open(now)
            elif self._size >= self.max_bytes or now - self._opened >= self.max_age_s:
                self._close()
                self._open(now)
            assert self._fd is not None
            written = os.write(self._fd, payload)
            if written != len(payload):  # a full disk: take the half-written lines back
                os.ftruncate(self._fd, self._size)
                raise OSError(f"{self.path}: wrote {written} of {len(payload)} bytes")
            self._size += written
            self._dirty = True

    def _sync_loop(self, pid: int) -> None:
        """fsync the current segment every `fsync_s` seconds, off the request path (an fsync
        on a busy disk took requests' throughput down by a tenth when it ran inline)."""
        while True:
            time.sleep(self.fsync_s)
            with self._lock:
                if self._pid != pid or self._fd is None or not self._dirty:
                    continue
                fd, self._dirty = os.dup(self._fd), False  # survives a rotation meanwhile
            try:
                os.fsync(fd)
            except OSError:
                pass  # a closed or vanished file: the rotation fsynced it
            finally:
                os.close(fd)

    def _open(self, now: float) -> None:
        if self._fd is not None and self._pid != os.getpid():
            os.close(self._fd)  # the parent's segment, inherited by a fork: never shared
        self._fd = None
        self._pid = os.getpid()
        self._count += 1
        self.folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        host = socket.gethostname().replace("-", "_")
        self.path = self.folder / f"{self.kind}-{stamp}-{host}-{self._pid}-{self._count}.jsonl"
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
        folder = os.open(self.folder, os.O_RDONLY)
        try:  # the new name itself survives a machine crash
            os.fsync(folder)
        finally:
            os.close(folder)
        self._opened = now
        self._size = 0
        if self._syncing_pid != self._pid:  # threads do not survive a fork: one per process
            self._syncing_pid = self._pid
            threading.Thread(target=self._sync_loop, args=(self._pid,), daemon=True).start()

    def _close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.fsync(self._fd)
            os.close(self._fd)
        self._fd = None
        self._dirty = False

    def close(self) -> None:
        with self._lock:
            self._close()


@dataclass
class LogRead:
    """Records read from a log, and what was skipped (a file and line, and why)."""

    records: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def segments(folder: str | Path, kind: str) -> list[Path]:
    """A log's segments, oldest first (by their start stamp)."""
    path = Path(folder)
    if not path.is_dir():
        return []
    return sorted(path.glob(f"{kind}-*.jsonl"), key=lambda p: p.name.split("-")[1:])


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1  # a trailing partial line is still being written
    yield from enumerate(data[:end].splitlines(), start=1)


def read_log(folder: str | Path, kind: str, since: str | None = None) -> LogRead:
    """Every complete record of a log, with `time` >= `since` (an ISO UTC stamp) if given.

    A line that is not a JSON object is skipped and reported, never fatal.
    """
    out = LogRead()
    oldest = datetime.fromisoformat(since.replace("Z", "+00:00")).timestamp() if since else None
    for path in segments(folder, kind):
        try:
            if oldest is not None and path.stat().st_mtime < oldest - 1.0:
                continue  # last written before `since`: nothing in it is new enough
            lines = list(_lines(path))
        except OSError as exc:
            out.skipped.append(f"{path.name}: unreadable ({exc})")
            continue
        for number, line in lines:
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError("not a JSON object")
            except ValueError as exc:
                out.skipped.append(f"{path.name}:{number}: {exc}")
                continue
            if since is None or str(record.get("time", "")) >= since:
                out.records.append(record)
    return out
