"""The registry on a real S3 API (moto's server on loopback, credentials checked): versions
claimed and aliases moved with conditional PUTs, across processes."""

from __future__ import annotations

import itertools
import multiprocessing as mp
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import s3fs

from blocks import ModelRegistry
from tasks.registry.store import AliasConflict, Registry, RegistryError
from tests.s3_server import S3Server

pytestmark = pytest.mark.integration
BUCKET = "models"


@pytest.fixture(scope="module")
def options(s3_server: S3Server) -> dict[str, Any]:
    owner = s3_server.options(s3_server.owner)
    fs = s3fs.S3FileSystem(**owner, skip_instance_cache=True)
    if not fs.exists(BUCKET):
        fs.mkdir(BUCKET)
    return owner


def _register_when_released(root: str, options: dict, i: int, go: Any) -> None:
    registry = Registry(root, options)  # imports done, endpoint probed: then all at once
    go.wait(60)
    registry.register("churn", {"model.txt": f"model {i}".encode()}, {"i": i})


def _move_forward(root: str, options: dict, writer: int, moves: int) -> int:
    registry, won = Registry(root, options), 0
    while won < moves:
        now = registry.aliases("churn").get("champion")
        try:
            registry.set_alias("churn", "champion", 1 + (now or 0) % 16, expected=now)
            won += 1
        except AliasConflict:
            continue
    return won


@pytest.mark.timeout(300)
def test_sixteen_processes_registering_at_once_get_sixteen_versions(options) -> None:
    root = f"s3://{BUCKET}/concurrent"
    ctx = mp.get_context("spawn")
    go = ctx.Event()
    writers = [
        ctx.Process(target=_register_when_released, args=(root, options, i, go)) for i in range(16)
    ]
    for writer in writers:
        writer.start()
    go.set()
    for writer in writers:
        writer.join(240)
    assert [w.exitcode for w in writers] == [0] * 16
    registry = Registry(root, options)
    versions = registry.versions("churn")
    assert [v.version for v in versions] == list(range(1, 17))
    # each number holds exactly one writer's files, and its metadata names the same writer
    assert sorted(v.metadata["i"] for v in versions) == list(range(16))
    for v in versions:
        assert registry.read("churn", v.version, "model.txt") == f"model {v.metadata['i']}".encode()
        assert registry.version_uri("churn", v.version).startswith(f"s3://{BUCKET}/concurrent/")

    # compare-and-swap moves from 4 processes: one unbroken chain, none lost
    with ctx.Pool(4) as pool:
        assert pool.starmap(_move_forward, [(root, options, w, 4) for w in range(4)]) == [4] * 4
    # and unconditional moves from 8 threads: each one is in the history
    with ThreadPoolExecutor(8) as threads:
        list(threads.map(lambda v: registry.set_alias("churn", "champion", v), range(1, 9)))
    history = registry.alias_history("churn", "champion")
    assert [m.seq for m in history] == list(range(1, 25))
    assert all(b.previous == a.version for a, b in itertools.pairwise(history))
    assert sorted(m.version for m in history[-8:]) == list(range(1, 9))
    assert registry.aliases("churn") == {"champion": history[-1].version}


def test_records_readers_and_half_written_versions_on_s3(options, s3_server: S3Server) -> None:
    root = f"s3://{BUCKET}/records"
    registry = Registry(root, options)
    registry.register("m", {"model.txt": b"x"}, {"trainer": "t"})
    first = registry.record("m", 1, "validation", {"evidence.json": b"{}", "plot.png": b"p"})
    second = registry.record("m", 1, "validation", {"evidence.json": b"{2}"})
    assert registry.records("m", 1, "validation") == [first, second]
    assert registry.read_record("m", 1, "validation", second, "evidence.json") == b"{2}"
    assert registry.record_uri("m", 1, "validation", first, "plot.png").startswith("s3://")
    # files staged by a writer that died before its claim: no version, no record
    fs = s3fs.S3FileSystem(**options, skip_instance_cache=True)
    fs.pipe(f"{BUCKET}/records/m/files/deadbeef/model.txt", b"half")
    assert [v.version for v in registry.versions("m")] == [1]
    assert registry.records("m", 1, "validation") == [first, second]
    # the block's options and secret reach the store; someone else's credentials do not pass
    block = ModelRegistry(
        root_uri=root,
        storage_options={"endpoint_url": s3_server.endpoint, "key": s3_server.owner.key},
        secret=s3_server.owner.secret,
    )
    assert block.registry().read("m", 1, "model.txt") == b"x"
    outsider = ModelRegistry(
        root_uri=root,
        storage_options={"endpoint_url": s3_server.endpoint, "key": s3_server.outsider.key},
        secret=s3_server.outsider.secret,
    )
    with pytest.raises(PermissionError):
        outsider.registry().versions("m")
    with pytest.raises(RegistryError, match="no alias 'champion'"):
        registry.get("m", "champion")
