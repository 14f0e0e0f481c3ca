from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.local_postgres import LocalPostgres
from flows.local_server import LocalServer
from tasks.processes import stop_process_group

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalPostgres]:
    """Debian's PostgreSQL on 127.0.0.1 in a temporary data directory, for the Prefect servers
    of the integration tests (a database each); stopped by pid at the end."""
    with LocalPostgres() as server:
        yield server


def prefect_on_postgres(postgres: LocalPostgres, home: Path) -> LocalServer:
    """A `prefect server start` whose database is a new one on `postgres` (started)."""
    database = f"prefect_{uuid.uuid4().hex[:12]}"
    server = LocalServer(home=home, port=free_port(), database_url=postgres.database(database))
    server.start(timeout=180)
    return server


@pytest.fixture(scope="session")
def prefect_server(
    tmp_path_factory: pytest.TempPathFactory, postgres: LocalPostgres
) -> Iterator[LocalServer]:
    """A real `prefect server start` on PostgreSQL, stopped (SIGKILL if needed) at the end."""
    server = prefect_on_postgres(postgres, tmp_path_factory.mktemp("prefect-home"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def prefect_env(prefect_server: LocalServer) -> dict[str, str]:
    return {
        **os.environ,
        "PREFECT_API_URL": prefect_server.api_url,
        "PREFECT_HOME": str(prefect_server.home),
    }


@pytest.fixture
def api(prefect_server: LocalServer) -> Iterator[None]:
    """Point this process's Prefect client, and its events, at the real server."""
    from prefect.events.worker import EventsWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    # the process's events go through one cached worker whose client was made for the first
    # server it saw (the flow tests'): drain it, so the next emit connects to this one; its
    # failing deliveries would otherwise share the global event loop with the flows' API calls
    EventsWorker.drain_all(timeout=10)
    with temporary_settings(updates={PREFECT_API_URL: prefect_server.api_url}):
        yield


class Processes:
    """Background processes started in their own process group and always stopped."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.pids: list[int] = []

    def start(
        self, name: str, args: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen:
        log = (self.logs / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True
        )
        self.pids.append(proc.pid)
        return proc

    def stop_all(self) -> None:
        for pid in reversed(self.pids):  # the last started (workers) first
            stop_process_group(pid, timeout=10)

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    try:
        yield procs
    finally:
        procs.stop_all()


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
