from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from deployments.request_log import REQUESTS, SegmentWriter, read_log, segments


def _records(start: int, n: int) -> list[dict]:
    return [
        {"request_id": f"r{i}", "row": 0, "time": f"2026-01-01T00:00:{i % 60:02d}Z"}
        for i in range(start, start + n)
    ]


def test_segments_rotate_by_size_and_by_age(tmp_path: Path) -> None:
    writer = SegmentWriter(tmp_path, REQUESTS, max_bytes=300, max_age_s=3600)
    for i in range(20):
        writer.append(_records(i, 1))
    by_size = segments(tmp_path, REQUESTS)
    assert len(by_size) > 3
    assert all(p.stat().st_size < 300 + 100 for p in by_size)
    aged = SegmentWriter(tmp_path / "aged", REQUESTS, max_age_s=0.05)
    aged.append(_records(0, 1))
    time.sleep(0.1)
    aged.append(_records(1, 1))
    assert len(segments(tmp_path / "aged", REQUESTS)) == 2
    ids = [r["request_id"] for r in read_log(tmp_path, REQUESTS).records]
    assert ids == [f"r{i}" for i in range(20)]  # every record once, in order


def test_each_process_writes_its_own_segment(tmp_path: Path) -> None:
    writer = SegmentWriter(tmp_path, REQUESTS)
    writer.append(_records(0, 1))  # opened in the parent, then forked (as gunicorn does)
    pid = os.fork()
    if pid == 0:  # the child: a gunicorn worker after the fork
        writer.append(_records(100, 5))
        os._exit(0)
    os.waitpid(pid, 0)
    writer.append(_records(1, 1))
    files = segments(tmp_path, REQUESTS)
    assert len(files) == 2 and len({f.name.split("-")[-2] for f in files}) == 2
    ids = sorted(r["request_id"] for r in read_log(tmp_path, REQUESTS).records)
    assert ids == sorted(["r0", "r1", *(f"r{i}" for i in range(100, 105))])


def test_readers_take_complete_lines_and_report_corrupt_ones(tmp_path: Path) -> None:
    writer = SegmentWriter(tmp_path, REQUESTS)
    writer.append(_records(0, 2))
    assert writer.path is not None
    with writer.path.open("ab") as fh:
        fh.write(b'not json\n{"request_id": "r9", "row": 0, "time": "2026')  # half written
    read = read_log(tmp_path, REQUESTS)
    assert [r["request_id"] for r in read.records] == ["r0", "r1"]
    assert len(read.skipped) == 1 and ":3:" in read.skipped[0]
    with writer.path.open("ab") as fh:
        fh.write(b'-01-01T00:01:00Z"}\n')  # the writer finishes the line
    assert [r["request_id"] for r in read_log(tmp_path, REQUESTS).records] == ["r0", "r1", "r9"]
    since = read_log(tmp_path, REQUESTS, since="2026-01-01T00:00:01Z").records
    assert [r["request_id"] for r in since] == ["r1", "r9"]


def test_records_that_are_not_json_are_refused_before_writing(tmp_path: Path) -> None:
    writer = SegmentWriter(tmp_path, REQUESTS)
    with pytest.raises(ValueError):
        writer.append([{"score": float("nan")}])
    assert read_log(tmp_path, REQUESTS).records == []


def test_segments_are_fsynced_in_the_background(tmp_path: Path, monkeypatch) -> None:
    import deployments.request_log as request_log

    synced: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(request_log.os, "fsync", fsync)
    writer = SegmentWriter(tmp_path, REQUESTS, fsync_s=0.05)
    writer.append(_records(0, 1))
    assert writer.path is not None and str(writer.path) not in synced  # not on the request path
    deadline = time.monotonic() + 5
    while str(writer.path) not in synced and time.monotonic() < deadline:
        time.sleep(0.02)
    assert str(writer.path) in synced  # the thread did it
