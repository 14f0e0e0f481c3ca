"""data_prep under faults: a Dask worker killed with SIGKILL mid-preprocessing (a real
`distributed` cluster of worker processes, by address), and a disk that fills up while a
snapshot is written (a small tmpfs as the output root). Afterwards the published snapshot,
its files and the Feast online store are read back."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import threading
import time
from contextlib import closing
from pathlib import Path

import pandas as pd
import pytest

from bench.load import ROOT, World
from blocks import FeatureRepo
from flows.data_prep import DataPrepParams, data_prep
from tasks.data.publish import (
    CURRENT,
    SNAPSHOTS,
    OutOfSpace,
    current_snapshot,
    features_uri,
    switch,
)

pytestmark = pytest.mark.faults


def _feast_block(name: str, folder: Path) -> str:
    FeatureRepo(
        repo_path=str(ROOT / "features"),
        registry_path=str(folder / "feast-registry.db"),
        sqlite_path=str(folder / "feast-online.db"),
    ).save(name, overwrite=True)
    return name


def _tables(output: Path) -> dict[str, pd.DataFrame]:
    root = Path(features_uri(str(output), current_snapshot(str(output))))
    out = {}
    for table in sorted(p.name for p in root.iterdir() if p.is_dir()):
        frame = pd.read_parquet(root / table)
        out[table] = frame.sort_values(list(frame.columns)).reset_index(drop=True)
    return out


@pytest.mark.timeout(420)
def test_a_dask_worker_killed_mid_data_prep(world: World, api, tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    killed: dict[str, object] = {}
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            memory_limit="3GiB",
        ) as cluster,
        Client(cluster) as client,
    ):
        pids = client.run(os.getpid)  # worker address -> pid

        def preprocessing() -> dict[str, int]:
            """Workers computing partitions of the feature tables (not a Prefect task: the
            flow's tasks run on the same workers), with how many."""
            busy = {
                w: sum("parquet" in str(k) or "partition" in str(k) for k in keys)
                for w, keys in client.processing().items()
            }
            return {w: n for w, n in busy.items() if n}

        def killer() -> None:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                if busy := preprocessing():
                    worker = max(busy, key=busy.__getitem__)
                    killed.update(worker=worker, pid=pids[worker], tasks=busy[worker])
                    os.kill(pids[worker], signal.SIGKILL)
                    return
                time.sleep(0.05)

        thread = threading.Thread(target=killer)
        thread.start()
        out = tmp_path / "out"
        try:
            result = data_prep(
                DataPrepParams(
                    source_uri=str(world.root / "raw"),
                    output_uri=str(out),
                    dask_address=cluster.scheduler_address,
                    feature_repo_block=_feast_block("faults-dask", tmp_path),
                )
            )
        finally:
            thread.join()
    assert killed, "no worker was busy: nothing was killed"
    print(f"killed worker {killed} mid-preprocessing; the run: {result.snapshot}")
    # the run completed through Dask's retries (the nanny restarted the worker, the scheduler
    # ran its tasks again): the same tables as the world's fault-free run on the same data
    assert current_snapshot(str(out)) == result.snapshot
    reference, rebuilt = _tables(world.root / "out"), _tables(out)
    assert sorted(rebuilt) == sorted(reference)
    for table, frame in reference.items():
        pd.testing.assert_frame_equal(rebuilt[table], frame, check_like=True, obj=table)
    # data_prep's own skew check compared the online store with the snapshot (max_skew_rate 0)


def _fill(path: Path) -> None:
    """Write zeros to `path` until its device is full."""
    chunk = 1 << 20
    with path.open("wb", buffering=0) as fh:
        while chunk:
            try:
                fh.write(b"\0" * chunk)
            except OSError:
                chunk //= 2


def _digest(folder: Path, pattern: str = "*") -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob(pattern))
        if p.is_file()
    }


def _rows(database: Path) -> str:
    """A SQLite database's content, dumped (its bytes move when its WAL is checkpointed)."""
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as conn:
        return "\n".join(conn.iterdump())


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 48 MiB tmpfs mounted for the test (needs CAP_SYS_ADMIN: root in CI's container)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=48m,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.timeout(240)
def test_a_full_disk_while_publishing_keeps_the_old_snapshot(
    world: World, tiny_raw: Path, small_disk: Path, api, tmp_path: Path
) -> None:
    out = small_disk / "out"
    params = DataPrepParams(
        source_uri=str(tiny_raw),
        output_uri=str(out),
        dask_cluster_block=world.blocks,  # Dask's local threads
        max_reject_rate=0.5,  # the tiny data is dirty on purpose
        feature_repo_block=_feast_block("faults-disk", tmp_path),
    )
    first = data_prep(params)
    before = _digest(out)
    registry, online = _digest(tmp_path, "feast-registry.db"), _rows(tmp_path / "feast-online.db")
    filler = small_disk / "filler"
    _fill(filler)  # the device full to the last block

    with pytest.raises(OutOfSpace) as raised:
        data_prep(params)
    message = str(raised.value)
    print(message)
    assert str(out) in message and "no space left" in message and first.snapshot in message
    assert current_snapshot(str(out)) == first.snapshot
    assert _digest(out) == before  # the published snapshot whole; nothing staged left behind
    assert sorted(p.name for p in (out / SNAPSHOTS).iterdir()) == [first.snapshot]
    assert not [p for p in out.iterdir() if p.name.startswith(f".{CURRENT}")]
    # Feast: as the old snapshot left it
    assert _digest(tmp_path, "feast-registry.db") == registry and registry
    assert _rows(tmp_path / "feast-online.db") == online
    # the last step of a publish, moving CURRENT, on the full device: all or nothing too
    with pytest.raises(OSError, match="No space left"):
        switch(str(out), "a-snapshot-that-never-was")
    assert current_snapshot(str(out)) == first.snapshot and _digest(out) == before
    assert not [p for p in out.iterdir() if p.name.startswith(f".{CURRENT}")]

    filler.unlink()  # space again: the next run publishes
    again = data_prep(params)
    assert current_snapshot(str(out)) == again.snapshot != first.snapshot
