"""The real servers and processes the integration and fault tests share: Debian's PostgreSQL,
a `prefect server start` on it, background processes stopped by pid, and waiting for a state."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun

from flows.local_postgres import LocalPostgres
from flows.local_server import LocalServer, prefect_cli
from tasks.processes import free_port, stop_process_group

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def prefect(env: dict[str, str], *args: str) -> str:
    """The `prefect` CLI against the server `env` names; its output (fails loudly)."""
    return prefect_cli(env, *args, cwd=ROOT, timeout=240)


def prefect_on_postgres(postgres: LocalPostgres, home: Path) -> LocalServer:
    """A `prefect server start` whose database is a new one on `postgres` (started)."""
    database = f"prefect_{uuid.uuid4().hex[:12]}"
    server = LocalServer(home=home, port=free_port(), database_url=postgres.database(database))
    server.start(timeout=180)
    return server


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


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def flow_run(run_id: uuid.UUID) -> FlowRun:
    """The flow run as the server has it now."""
    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id)


def final_run(run_id: uuid.UUID) -> FlowRun | None:
    """The flow run once its state is final, else None (a `wait_for` predicate)."""
    now = flow_run(run_id)
    return now if now.state is not None and now.state.is_final() else None


@contextmanager
def pointed_at(server: LocalServer) -> Iterator[None]:
    """This process's Prefect client, and its events, pointed at `server` for the block."""
    from prefect.events.worker import EventsWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    # the process's events go through one cached worker whose client was made for the first
    # server it saw (the flow tests'): drain it, so the next emit connects to this one; its
    # failing deliveries would otherwise share the global event loop with the flows' API calls
    EventsWorker.drain_all(timeout=10)
    with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
        yield
