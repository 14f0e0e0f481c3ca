"""The local serving target: one `seldon-core-microservice` process per predictor, from the
serving environment, behind nginx (deployments/nginx.py), all bound to loopback.

A model's state folder (`<state_dir>/<model>/`) holds `state.json` (predictors, their pids and
ports, the routing), nginx's config, pid and logs, each predictor's log, and the request and
labels logs every predictor of the model appends to (`log/`); it and `log/` are made
owner-only (0700). Processes are started in their own session and stopped by pid, process
group first with SIGTERM, then SIGKILL. A predictor's online store (a Redis URL may carry its
password) reaches it through its environment, never its command line, which every local user
can read.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from deployments.model_server import SERVER_CLASS
from deployments.nginx import ACCESS_LOG, Upstream, nginx_config
from deployments.seldon_local import PRIVATE_PARAMETERS
from tasks.processes import private_dir, stop_process_group

ROOT = Path(__file__).resolve().parents[2]
LAUNCHER = "deployments.seldon_local"  # in every predictor's command line
STATE = "state.json"


class ServingError(RuntimeError):
    """A predictor or the ingress that cannot start or answer; the message names which."""


@dataclass(frozen=True)
class LocalSettings:
    state_dir: str = "data/serving"
    host: str = "127.0.0.1"
    port: int = 9000  # nginx: the model's one address for clients
    serving_python: str = ".venv-serving/bin/python"
    online_store: str = "data/feast/online_store.db"
    online_store_password: str = field(default="", repr=False)  # Redis only; in clear
    workers: int = 1  # gunicorn workers per predictor
    threads: int = 2  # >1: gunicorn's threaded worker, which keeps connections alive
    max_rows: int = 1000
    max_body_kb: int = 1024  # nginx and every predictor answer a larger body 413
    startup_timeout_s: float = 60.0
    drain_s: float = 2.0  # after traffic leaves a predictor, before it is stopped
    client_keepalive_s: int = 0  # nginx keep-alive for clients, s (ServingTarget's field)


@dataclass
class Predictor:
    role: str
    version: int
    model_dir: str
    http_port: int
    metrics_port: int
    pid: int
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    host: str = "127.0.0.1"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"


@dataclass
class Routing:
    main: int  # pid of the main predictor
    canary: int | None = None
    canary_percent: int = 0
    shadow: int | None = None


def free_port(host: str = "127.0.0.1", taken: tuple[int, ...] = ()) -> int:
    while True:
        with socket.socket() as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in taken:
            return port


def _alive(pid: int, marker: str) -> bool:
    """Whether `pid` runs and is still the process recorded (its command line holds `marker`):
    after a reboot a recorded pid may belong to anything, and is never signalled then."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    try:  # a zombie child of this process counts as dead
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done != 0:
            return False
    except ChildProcessError:
        pass
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return marker.encode() in command


def http_json(url: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
    """GET (or POST `body` as JSON) and return the status and the decoded answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        text = exc.read()
        try:
            return exc.code, json.loads(text)
        except ValueError:
            return exc.code, text.decode(errors="replace")


class LocalTarget:
    """A model's predictors and its nginx, as recorded in its state folder."""

    def __init__(self, settings: LocalSettings, model: str) -> None:
        self.settings = settings
        self.model = model
        self.folder = Path(settings.state_dir).resolve() / model
        self.log_dir = self.folder / "log"

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.port}"

    @property
    def access_log(self) -> Path:
        return self.folder / ACCESS_LOG

    def is_alive(self, predictor: Predictor) -> bool:
        return _alive(predictor.pid, LAUNCHER)

    # -- state --------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        path = self.folder / STATE
        if not path.is_file():
            return {"predictors": [], "routing": None, "nginx_pid": None}
        return dict(json.loads(path.read_text()))

    def _save(self, state: dict[str, Any]) -> None:
        private_dir(self.folder)
        tmp = self.folder / f".{STATE}.{os.getpid()}"
        tmp.write_text(json.dumps(state, indent=2))
        os.replace(tmp, self.folder / STATE)

    def predictors(self) -> list[Predictor]:
        """The recorded predictors whose process is still running."""
        found = [Predictor(**p) for p in self.state()["predictors"]]
        return [p for p in found if _alive(p.pid, LAUNCHER)]

    def routing(self) -> Routing | None:
        routing = self.state().get("routing")
        return Routing(**routing) if routing else None

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer of the state at a time (a deployment run, `mlops serving stop`, ...)."""
        private_dir(self.folder)
        with (self.folder / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _record(self, predictor: Predictor | None = None, drop: int | None = None) -> None:
        with self._locked():
            state = self.state()
            kept = [
                p for p in state["predictors"] if p["pid"] != drop and _alive(p["pid"], LAUNCHER)
            ]
            if predictor is not None:
                kept.append(asdict(predictor))
            state["predictors"] = kept
            self._save(state)

    # -- predictors ---------------------------------------------------------------------------

    def start(self, role: str, version: int, model_dir: str) -> Predictor:
        """Start a predictor and wait until it is healthy; ServingError (with the end of its log)
        if it exits or does not answer in time. A version that fails to load never gets
        traffic: it is never routed to."""
        s = self.settings
        private_dir(self.folder)
        private_dir(self.log_dir)
        http_port = free_port(s.host)
        metrics_port = free_port(s.host, taken=(http_port,))
        parameters = [
            {"name": "model_dir", "value": str(Path(model_dir).resolve()), "type": "STRING"},
            {"name": "role", "value": role, "type": "STRING"},
            {"name": "model_name", "value": self.model, "type": "STRING"},
            {"name": "version", "value": str(version), "type": "STRING"},
            {"name": "log_dir", "value": str(self.log_dir), "type": "STRING"},
            {"name": "max_rows", "value": str(s.max_rows), "type": "INT"},
        ]
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "PREDICTIVE_UNIT_ID": self.model,
            "PREDICTOR_ID": role,
            "PREDICTOR_LABELS": json.dumps({"version": str(version)}),
            "INCLUDE_METRICS_IN_CLIENT_RESPONSE": "false",
            # one OpenMP thread per request thread: LightGBM's default pool stalls a 1-row
            # predict for ms when the cores are busy (p99 9 ms -> 0.06 ms measured)
            "OMP_NUM_THREADS": "1",
            PRIVATE_PARAMETERS: json.dumps(
                [{"name": "online_store", "value": self.online_store(), "type": "STRING"}]
            ),
        }
        log_path = self.folder / f"predictor-{role}-v{version}-{http_port}.log"
        args = [
            str(_resolve(s.serving_python)),
            "-m",
            LAUNCHER,
            "--host",
            s.host,
            "--max-body-kb",
            str(s.max_body_kb),
            SERVER_CLASS,
            "--service-type",
            "MODEL",
            "--http-port",
            str(http_port),
            "--metrics-port",
            str(metrics_port),
            "--grpc-workers",
            "0",
            "--workers",
            str(s.workers),
            "--threads",
            str(s.threads),
            "--parameters",
            json.dumps(parameters),
        ]
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env=env,
                start_new_session=True,
            )
        predictor = Predictor(
            role, version, str(model_dir), http_port, metrics_port, process.pid, host=s.host
        )
        self._record(predictor)
        try:
            self.wait_healthy(predictor, log_path, process)
        except BaseException:
            self.stop(predictor, drain_s=0)
            raise
        return predictor

    def online_store(self) -> str:
        """The predictors' online store: the SQLite file's absolute path, or the Redis URL with
        the settings' password in it (in clear: for the predictor's environment only)."""
        s = self.settings
        location = _path_or_empty(s.online_store)
        if not s.online_store_password:
            return location
        if not location.startswith(("redis://", "rediss://")):
            raise ServingError(
                f"{self.model}: an online store password is for a redis:// URL, not "
                f"'{s.online_store}'"
            )
        url = urlsplit(location)
        user = quote(url.username or "", safe="")
        netloc = f"{user}:{quote(s.online_store_password, safe='')}@{url.hostname}" + (
            f":{url.port}" if url.port else ""
        )
        return urlunsplit(url._replace(netloc=netloc))

    def wait_healthy(
        self, predictor: Predictor, log_path: Path, process: subprocess.Popen[bytes]
    ) -> None:
        deadline = time.monotonic() + self.settings.startup_timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ServingError(
                    f"{self.model} v{predictor.version} ({predictor.role}) exited while "
                    f"starting:\n{_tail(log_path)}"
                )
            try:
                status, answer = http_json(f"{predictor.url}/health/status", timeout=2)
                if status == 200:
                    return
                last = f"HTTP {status}: {answer}"
            except OSError as exc:
                last = str(exc)
            time.sleep(0.3)
        raise ServingError(
            f"{self.model} v{predictor.version} ({predictor.role}) not healthy after "
            f"{self.settings.startup_timeout_s:.0f} s ({last}):\n{_tail(log_path)}"
        )

    def stop(self, predictor: Predictor, drain_s: float | None = None) -> None:
        """Stop a predictor (after `drain_s`, default the settings') and forget it."""
        time.sleep(self.settings.drain_s if drain_s is None else drain_s)
        stop_process_group(predictor.pid, timeout=10)
        self._record(drop=predictor.pid)

    # -- the ingress --------------------------------------------------------------------------

    def route(self, routing: Routing) -> None:
        """Send the traffic as `routing` says: write nginx's config, then start it or reload it
        (no connection is dropped). Only healthy, recorded predictors are routed to."""
        with self._locked():
            self._route(routing)

    def _route(self, routing: Routing) -> None:
        by_pid = {p.pid: p for p in self.predictors()}
        for pid in (routing.main, routing.canary, routing.shadow):
            if pid is not None and pid not in by_pid:
                raise ServingError(f"{self.model}: no running predictor with pid {pid}")
        main = by_pid[routing.main]
        upstreams = [Upstream(main.address, 100 - routing.canary_percent)]
        if routing.canary is not None:
            if not 0 < routing.canary_percent <= 100:
                raise ServingError(f"canary traffic must be 1..100%, not {routing.canary_percent}")
            canary = Upstream(by_pid[routing.canary].address, routing.canary_percent)
            upstreams = [u for u in upstreams if u.weight > 0] + [canary]
        shadow = by_pid[routing.shadow].address if routing.shadow is not None else None
        private_dir(self.folder / "tmp")
        config = nginx_config(
            self.folder,
            f"{self.settings.host}:{self.settings.port}",
            upstreams,
            shadow,
            self.settings.max_body_kb,
            run_as_root=os.geteuid() == 0,
            client_keepalive_s=self.settings.client_keepalive_s,
        )
        conf = self.folder / "nginx.conf"
        tmp = self.folder / ".nginx.conf.new"
        tmp.write_text(config)
        self._nginx("-t", conf=tmp)  # a config nginx refuses never replaces the running one
        os.replace(tmp, conf)
        pid = self.nginx_pid()
        if pid is None:
            self._nginx()
            self._wait_nginx()
        else:
            self._nginx("-s", "reload")
            time.sleep(0.3)  # new workers take over; old ones finish their requests
        state = self.state()
        state["routing"] = asdict(routing)
        state["nginx_pid"] = self.nginx_pid()
        self._save(state)

    def nginx_pid(self) -> int | None:
        path = self.folder / "nginx.pid"
        try:
            pid = int(path.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid, "nginx") else None

    def _nginx(self, *args: str, conf: Path | None = None) -> None:
        command = [
            "nginx",
            "-c",
            str(conf or self.folder / "nginx.conf"),
            "-p",
            str(self.folder),
            "-e",
            str(self.folder / "nginx-error.log"),
            *args,
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise ServingError(f"nginx {' '.join(args) or 'start'} failed: {done.stderr.strip()}")

    def _wait_nginx(self) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.settings.host, self.settings.port), 1):
                    return
            except OSError:
                time.sleep(0.1)
        raise ServingError(f"nginx did not listen on {self.settings.host}:{self.settings.port}")

    def stop_all(self) -> list[int]:
        """Stop nginx, then every predictor; the pids stopped."""
        with self._locked():
            return self._stop_all()

    def _stop_all(self) -> list[int]:
        stopped = []
        pid = self.nginx_pid()
        if pid is not None:
            self._nginx("-s", "quit")
            deadline = time.monotonic() + 10
            while _alive(pid, "nginx") and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(pid, "nginx"):
                stop_process_group(pid, timeout=5)
            stopped.append(pid)
        for predictor in self.predictors():
            stop_process_group(predictor.pid, timeout=10)
            stopped.append(predictor.pid)
        self._save({"predictors": [], "routing": None, "nginx_pid": None})
        return stopped


def _resolve(path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else ROOT / p


def _path_or_empty(path: str) -> str:
    """A SQLite file as an absolute path; a redis:// URL as it is."""
    if not path or "://" in path:
        return path
    return str(Path(path).resolve())


def _tail(path: Path, lines: int = 15) -> str:
    """The log's last error lines (why a predictor stopped), then its last lines."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    errors = list(dict.fromkeys(t for t in text if "Error:" in t))  # Seldon adds exit noise
    return "\n".join([*errors[-3:], *text[-lines:]])
