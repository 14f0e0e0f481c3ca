from __future__ import annotations

import shutil
import socket
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from tasks.feature_store.store import (
    StoreSettings,
    apply_definitions,
    materialize,
    online_features,
    open_store,
)
from tests.integration.conftest import ROOT, free_port, wait_for

pytestmark = pytest.mark.integration
SERVICE = "credit_risk_default_v1"


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.mark.skipif(
    shutil.which("redis-server") is None,
    reason="redis-server not installed (make setup installs it)",
)
def test_redis_online_store_serves_what_sqlite_serves(
    processes, credit_spec, tiny_features: Path, tmp_path: Path
) -> None:
    port = free_port()
    processes.start(
        "redis",
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
    )
    wait_for(lambda: _answers(port), 30, "redis-server")

    end = datetime(2026, 7, 1, tzinfo=UTC)
    lookups = {}
    for kind, extra in {
        "sqlite": {},
        "redis": {"redis_connection_string": f"127.0.0.1:{port}"},
    }.items():
        settings = StoreSettings(
            repo_path=str(ROOT / "features"),
            registry_path=str(tmp_path / kind / "registry.db"),
            sqlite_path=str(tmp_path / kind / "online.db"),
            online_store=kind,  # type: ignore[arg-type]
            **extra,
        )
        store = open_store(settings)
        apply_definitions(store, credit_spec, str(tiny_features))
        materialize(store, credit_spec, end=end, start=datetime(2016, 1, 1, tzinfo=UTC))
        rows = [{"customer_id": i} for i in range(1, 60)]
        lookups[kind] = online_features(store, credit_spec, SERVICE, rows).sort_index(axis=1)
    assert redis.Redis(host="127.0.0.1", port=port).dbsize() > 0  # served from Redis itself
    assert lookups["redis"]["annual_income"].notna().sum() > 0
    assert lookups["redis"].equals(lookups["sqlite"])
