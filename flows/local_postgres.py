"""A PostgreSQL server on loopback for the Prefect server (Debian's `postgresql` binaries).

The cluster lives in its own data directory (in a fresh 0700 folder), listens on 127.0.0.1
only (no Unix socket outside that folder), and asks for a password generated at `initdb`.
PostgreSQL refuses to run as root: run as root, the cluster belongs to the `postgres` user that
Debian's package creates. Stopped by pid (fast shutdown).

    with LocalPostgres(workdir) as pg:
        url = pg.database("prefect")  # for PREFECT_API_DATABASE_CONNECTION_URL
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from tasks.processes import free_port, stop_process_group

USER = "prefect"


def postgres_bin(name: str) -> str:
    """A PostgreSQL program: on PATH, else the newest of Debian's /usr/lib/postgresql/*/bin."""
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if not versions:
        raise FileNotFoundError(f"PostgreSQL's {name} not found (make setup installs postgresql)")
    return versions[-1]


class LocalPostgres:
    """`postgres` in a fresh data directory under `parent` (a temporary folder by default)."""

    def __init__(self, parent: str | Path | None = None) -> None:
        self.parent = Path(parent) if parent else Path(tempfile.gettempdir())
        self.root: Path | None = None
        self.port = 0
        self.password = secrets.token_urlsafe(18)
        self._proc: subprocess.Popen[bytes] | None = None
        self._owner = pwd.getpwnam("postgres") if os.geteuid() == 0 else None

    def _as_owner(self, args: list[str]) -> list[str]:
        if self._owner is None:
            return args
        return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", *args]

    def _run(self, args: list[str], **env: str) -> None:
        done = subprocess.run(
            self._as_owner(args),
            capture_output=True,
            text=True,
            env={**os.environ, **env},
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:1])} failed: {done.stdout}{done.stderr}")

    def start(self, timeout_s: float = 60) -> LocalPostgres:
        self.parent.mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix="mlops-postgres-", dir=self.parent))
        if self._owner is not None:  # the cluster's owner must reach and own its folder
            os.chown(self.root, self._owner.pw_uid, self._owner.pw_gid)
        pwfile = self.root / "pw"  # owner-only from its creation; removed after initdb
        with os.fdopen(os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as fh:
            fh.write(self.password)
        if self._owner is not None:
            os.chown(pwfile, self._owner.pw_uid, self._owner.pw_gid)
        data = self.root / "data"
        self._run(
            [
                postgres_bin("initdb"),
                "-D",
                str(data),
                "-U",
                USER,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--no-instructions",
            ]
        )
        pwfile.unlink()
        self.port = free_port()
        args = [postgres_bin("postgres"), "-D", str(data), "-h", "127.0.0.1"]
        args += ["-p", str(self.port), "-k", str(self.root), "-c", "max_connections=200"]
        with (self.root / "postgres.log").open("wb") as log:
            self._proc = subprocess.Popen(
                self._as_owner(args), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout_s
        while not self._ready():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                log_text = (self.root / "postgres.log").read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"PostgreSQL did not start: {log_text}")
            time.sleep(0.2)
        return self

    def _ready(self) -> bool:
        done = subprocess.run(
            [postgres_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"],
            capture_output=True,
        )
        return done.returncode == 0

    def database(self, name: str) -> str:
        """Create database `name`; its SQLAlchemy asyncpg URL, as Prefect takes it."""
        self._run(
            [postgres_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, name],
            PGPASSWORD=self.password,
        )
        return f"postgresql+asyncpg://{USER}:{self.password}@127.0.0.1:{self.port}/{name}"

    def stop(self, timeout_s: float = 30) -> None:
        """Fast shutdown (SIGINT to the postmaster), SIGKILL after `timeout_s`; the data
        directory is removed."""
        if self._proc is not None:
            try:
                self._proc.send_signal(signal.SIGINT)
                self._proc.wait(timeout_s)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
            stop_process_group(self._proc.pid, timeout=10)
            self._proc = None
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
