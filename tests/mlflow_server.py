"""A real `mlflow server` on loopback for tests: SQLite backend store, a local artifact root
served through the server (mlflow-artifacts:/), in its own process group, stopped by pid."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tasks.processes import free_port, stop_process_group

BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class MlflowServer:
    url: str
    pid: int
    root: Path


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=1) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def start_mlflow_server(root: Path, timeout: float = 90) -> MlflowServer:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    root.mkdir(parents=True, exist_ok=True)
    with (root / "mlflow-server.log").open("wb") as log:
        proc = subprocess.Popen(
            [
                str(BIN / "mlflow"),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--backend-store-uri",
                f"sqlite:///{root / 'mlflow.db'}",
                "--artifacts-destination",
                str(root / "artifacts"),
                "--workers",
                "1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=root,
            # its job runner (huey, for MLflow's GenAI jobs) busy-polls: ~180% CPU when idle
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        )
    deadline = time.monotonic() + timeout
    while not _healthy(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process_group(proc.pid, timeout=10)
            raise RuntimeError(
                f"mlflow server did not answer: {(root / 'mlflow-server.log').read_text()[-3000:]}"
            )
        time.sleep(0.3)
    return MlflowServer(url, proc.pid, root)


def stop_mlflow_server(server: MlflowServer) -> None:
    stop_process_group(server.pid, timeout=15)
