"""A local Prefect server started and stopped as a process: on SQLite under its PREFECT_HOME
(the embedded default), or on PostgreSQL given `database_url` (or
PREFECT_API_DATABASE_CONNECTION_URL in the environment). Its home is made owner-only (0700); the
database URL, password included, reaches the server through its environment."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tasks.processes import private_dir, stop_process_group

DEFAULT_HOME = Path(".mlops/prefect")
DEFAULT_PORT = int(os.environ.get("MLOPS_PREFECT_PORT", "4200"))


@dataclass(frozen=True)
class LocalServer:
    home: Path
    port: int
    # postgresql+asyncpg://user:password@...; None: the environment's, or SQLite
    database_url: str | None = field(default=None, repr=False)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.home / "server.pid"

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def start(self, timeout: float = 90.0) -> None:
        """Start the server unless it already answers; wait until /api/health does."""
        if self.healthy():
            return
        private_dir(self.home)
        env = {**os.environ, "PREFECT_HOME": str(self.home.resolve())}
        env.pop("PREFECT_API_URL", None)
        env["PREFECT_UI_API_URL"] = self.api_url  # the UI's calls (else :4200 whatever the port)
        if self.database_url:
            env["PREFECT_API_DATABASE_CONNECTION_URL"] = self.database_url
        log = (self.home / "server.log").open("ab")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "prefect",
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid_file.write_text(str(proc.pid))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"Prefect server exited early; see {self.home / 'server.log'}")
            if self.healthy():
                return
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"Prefect server on port {self.port} not healthy after {timeout:.0f}s")

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server's whole process group; SIGKILL after `timeout`."""
        if not self.pid_file.exists():
            return
        stop_process_group(int(self.pid_file.read_text()), timeout)
        self.pid_file.unlink(missing_ok=True)


def prefect_cli(
    env: dict[str, str], *args: str, cwd: Path | None = None, timeout: float = 600
) -> str:
    """Run the Prefect CLI of this interpreter against `env`'s API; fail naming the command."""
    done = subprocess.run(
        [sys.executable, "-m", "prefect", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise RuntimeError(f"prefect {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def default_server() -> LocalServer:
    return LocalServer(home=DEFAULT_HOME, port=DEFAULT_PORT)


@dataclass(frozen=True)
class LocalWorker:
    """A `prefect worker start` for one work pool, its pid and log under `home`."""

    home: Path
    pool: str

    @property
    def pid_file(self) -> Path:
        return self.home / "worker.pid"

    def pid(self) -> int | None:
        """The recorded worker's pid while it runs (a recycled pid is not it)."""
        if not self.pid_file.exists():
            return None
        pid = int(self.pid_file.read_text())
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        return pid if b"worker" in command and self.pool.encode() in command else None

    def start(self, env: dict[str, str]) -> int:
        """Start the worker against `env`'s PREFECT_API_URL unless it already runs."""
        running = self.pid()
        if running is not None:
            return running
        private_dir(self.home)
        log = (self.home / "worker.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "worker", "start", "-p", self.pool],
            env={"PREFECT_WORKER_QUERY_SECONDS": "5", **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid_file.write_text(str(proc.pid))
        return proc.pid

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the worker's process group (the flow runs it started are in their own)."""
        pid = self.pid()
        if pid is not None:
            stop_process_group(pid, timeout)
        self.pid_file.unlink(missing_ok=True)


def default_worker() -> LocalWorker:
    return LocalWorker(home=DEFAULT_HOME, pool="mlops-local")


def cancel_active_runs(timeout: float = 60) -> list[str]:
    """Cancel this project's deployment runs still going (a retraining from an earlier demo
    would write into the workspace being reset, or a flow run whose worker is gone holds its
    slot): ask, then after `timeout` end them (their process, if alive here, is stopped)."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowRunFilter,
        FlowRunFilterState,
    )
    from prefect.client.schemas.filters import FlowRunFilterStateType as Types
    from prefect.client.schemas.objects import StateType
    from prefect.states import Cancelled, Cancelling

    from flows import FLOWS

    going = [StateType.RUNNING, StateType.PENDING, StateType.CANCELLING]
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=Types(any_=going))),
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=list(FLOWS))),
        )
        for run in runs:
            client.set_flow_run_state(run.id, Cancelling(), force=True)
        deadline = time.monotonic() + timeout
        while runs and time.monotonic() < deadline:
            states = [client.read_flow_run(r.id).state for r in runs]
            if all(s is not None and s.is_final() for s in states):
                break
            time.sleep(2)
        for run in runs:
            if (client.read_flow_run(run.id).state or Cancelled()).is_final():
                continue
            pid = str(run.infrastructure_pid or "").rsplit(":", 1)[-1]
            if pid.isdigit() and Path(f"/proc/{pid}").exists():
                stop_process_group(int(pid), timeout=10)
            client.set_flow_run_state(run.id, Cancelled(message="ended by mlops"), force=True)
    return [r.name for r in runs]
