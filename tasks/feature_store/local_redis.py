"""A redis-server on loopback for Feast's Redis online store: tests, benchmarks, one machine."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from tasks.processes import free_port, stop_process_group


class LocalRedis:
    """`redis-server` bound to `host` on a free port, without persistence, in its own session,
    its working folder a fresh owner-only (0700) one (where a SAVE would write), removed when
    it is stopped by pid. Use as a context manager."""

    def __init__(self, log: str | Path, host: str = "127.0.0.1", binary: str = "redis-server"):
        self.log, self.host, self.binary = Path(log), host, binary
        self.port = 0
        self.dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def connection_string(self) -> str:
        """Feast's form (`host:port`)."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self, timeout_s: float = 30) -> LocalRedis:
        self.port = free_port(self.host)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix="mlops-redis-"))
        args = [self.binary, "--bind", self.host, "--port", str(self.port), "--dir", str(self.dir)]
        args += ["--save", "", "--appendonly", "no", "--protected-mode", "yes"]
        with self.log.open("wb") as out:
            self._proc = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, cwd=self.dir, start_new_session=True
            )
        deadline = time.monotonic() + timeout_s
        while not self._answers():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)
        return self

    def _answers(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self._proc is not None:
            stop_process_group(self._proc.pid, timeout=10)
            self._proc = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> LocalRedis:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
