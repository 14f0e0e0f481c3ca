"""Prometheus for the platform: the serving targets file, the rendered configuration, and a local
Prometheus + Pushgateway pair started on loopback and stopped by pid.

Prometheus scrapes every predictor's Seldon metrics endpoint through a file_sd targets file
(`write_serving_targets`, or `refresh_serving_targets` from the local target's state files),
which it re-reads on change: a predictor that starts or stops needs no restart. The monitoring
flow pushes its gauges to the Pushgateway, which Prometheus scrapes with honor_labels. The
configuration and the alert rules live in deployments/prometheus/ (`prometheus.yml` is a
template; `render_config` fills it in).

Debian's `prometheus` and `prometheus-pushgateway` packages provide the binaries
(`make system`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import string
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from tasks.processes import private_dir, stop_process_group
from tasks.serving.local_target import STATE, LocalSettings, LocalTarget, Predictor, free_port

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = ROOT / "deployments" / "prometheus"
CONFIG_TEMPLATE = CONFIG_DIR / "prometheus.yml"
RULES = CONFIG_DIR / "rules.yml"
CONFIG = "prometheus.yml"
SERVING_JOB = "mlops_serving"
PUSHGATEWAY_JOB = "mlops_pushgateway"
MONITORING_JOB = "mlops_monitoring"  # the job the monitoring flow pushes under
TARGETS_FILE = "prometheus-targets.json"  # in the serving state folder; the deployment flow
# rewrites it whenever the predictors change


class PrometheusError(RuntimeError):
    """A server that cannot start or answer, or a query Prometheus refuses; the message says
    which (with the end of the server's log where it has one)."""


class ServingPredictor(Protocol):
    """What a scrape target needs of a predictor (tasks.serving.local_target.Predictor is one)."""

    @property
    def role(self) -> str: ...

    @property
    def version(self) -> int: ...

    @property
    def metrics_port(self) -> int: ...

    @property
    def host(self) -> str: ...


# -- the serving targets --------------------------------------------------------------------------


def serving_target_groups(
    predictors_by_model: Mapping[str, Iterable[ServingPredictor]],
) -> list[dict[str, Any]]:
    """file_sd target groups: one per predictor, `host:metrics_port` labelled model, version and
    role, in a stable order (model, role, version)."""
    groups = [
        {
            "targets": [f"{p.host}:{p.metrics_port}"],
            "labels": {"model": model, "version": str(p.version), "role": p.role},
        }
        for model, predictors in predictors_by_model.items()
        for p in predictors
    ]
    return sorted(
        groups, key=lambda g: (g["labels"]["model"], g["labels"]["role"], g["labels"]["version"])
    )


def write_serving_targets(
    path: str | Path, predictors_by_model: Mapping[str, Iterable[ServingPredictor]]
) -> Path:
    """Write the file_sd targets file atomically (Prometheus never reads half a file); the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(serving_target_groups(predictors_by_model), indent=2) + "\n")
    os.replace(tmp, out)
    return out


def serving_targets_from_state(state_dir: str | Path) -> dict[str, list[Predictor]]:
    """The running predictors of every model the local serving target keeps state for
    (`<state_dir>/<model>/state.json`), by model; a recorded predictor whose process is gone is
    left out."""
    root = Path(state_dir)
    if not root.is_dir():
        return {}
    settings = LocalSettings(state_dir=str(root))
    found: dict[str, list[Predictor]] = {}
    for state in sorted(root.glob(f"*/{STATE}")):
        model = state.parent.name
        predictors = LocalTarget(settings, model).predictors()
        if predictors:
            found[model] = predictors
    return found


def refresh_serving_targets(state_dir: str | Path, path: str | Path) -> int:
    """Rewrite the targets file from the local target's state; the number of targets."""
    by_model = serving_targets_from_state(state_dir)
    write_serving_targets(path, by_model)
    return sum(len(p) for p in by_model.values())


# -- the configuration ----------------------------------------------------------------------------


def prometheus_duration(seconds: float) -> str:
    """A Prometheus duration: whole seconds as `2s`, anything finer in milliseconds."""
    if seconds <= 0:
        raise ValueError(f"an interval must be positive, not {seconds}")
    ms = round(seconds * 1000)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{max(ms, 1)}ms"


def render_config(
    out_dir: str | Path,
    targets_file: str | Path,
    pushgateway_address: str,
    interval_s: float = 2.0,
) -> Path:
    """Write `prometheus.yml` (scrape and evaluation every `interval_s`, file_sd re-read as
    often) and a copy of the rules beside it into `out_dir`; the config's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    interval = prometheus_duration(interval_s)
    # paths and addresses as JSON strings: valid YAML double-quoted scalars, whatever they hold
    config = string.Template(CONFIG_TEMPLATE.read_text()).substitute(
        INTERVAL=interval,
        REFRESH_INTERVAL=interval,
        SERVING_TARGETS_FILE=json.dumps(str(Path(targets_file).resolve())),
        PUSHGATEWAY_ADDRESS=json.dumps(pushgateway_address),
    )
    shutil.copyfile(RULES, out / RULES.name)
    path = out / CONFIG
    path.write_text(config)
    return path


# -- the local servers ----------------------------------------------------------------------------


class LocalPrometheus:
    """Prometheus and a Pushgateway on loopback, each a child process in its own session.

    `work_dir` holds the rendered config, the TSDB, the Pushgateway's persistence file and both
    logs (a temporary folder, removed on `stop`, when not given); it and the TSDB are
    owner-only (0700) when this makes them. The serving targets file
    defaults to `<work_dir>/serving_targets.json` (written empty when missing). Ports not given
    are picked free. Use as a context manager, or `start()` then `stop()`.
    """

    def __init__(
        self,
        work_dir: str | Path | None = None,
        *,
        targets_file: str | Path | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        pushgateway_port: int | None = None,
        interval_s: float = 2.0,
        startup_timeout_s: float = 30.0,
        prometheus_bin: str = "prometheus",
        pushgateway_bin: str = "prometheus-pushgateway",
    ) -> None:
        self._own_dir = work_dir is None
        self.work_dir = Path(work_dir) if work_dir is not None else None
        self.targets_file = Path(targets_file) if targets_file is not None else None
        self.host = host
        self.port = port
        self.pushgateway_port = pushgateway_port
        self.interval_s = interval_s
        self.startup_timeout_s = startup_timeout_s
        self.prometheus_bin = prometheus_bin
        self.pushgateway_bin = pushgateway_bin
        self._processes: dict[str, subprocess.Popen[bytes]] = {}

    # -- addresses and pids --------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pushgateway_address(self) -> str:
        return f"{self.host}:{self.pushgateway_port}"

    @property
    def pushgateway_url(self) -> str:
        return f"http://{self.pushgateway_address}"

    @property
    def pids(self) -> dict[str, int]:
        """The started servers' pids (`prometheus`, `pushgateway`), each its process group's."""
        return {name: p.pid for name, p in self._processes.items()}

    def _dir(self) -> Path:
        if self.work_dir is None:
            raise PrometheusError("not started")
        return self.work_dir

    # -- start and stop ------------------------------------------------------------------------

    def start(self) -> LocalPrometheus:
        """Start the Pushgateway, then Prometheus, and wait until both are ready; on failure
        both are stopped and PrometheusError names the server with the end of its log."""
        if self._processes:
            raise PrometheusError(f"already started (pids {self.pids})")
        for binary in (self.prometheus_bin, self.pushgateway_bin):
            if shutil.which(binary) is None:
                raise PrometheusError(f"'{binary}' not found: `make system` installs it")
        if self.work_dir is None:
            self.work_dir = Path(tempfile.mkdtemp(prefix="mlops-prometheus-"))
        work = private_dir(self.work_dir)
        tsdb = private_dir(work / "tsdb")
        if self.targets_file is None:
            self.targets_file = work / "serving_targets.json"
        if not self.targets_file.exists():
            write_serving_targets(self.targets_file, {})
        if self.pushgateway_port is None:
            self.pushgateway_port = free_port(self.host, taken=(self.port or 0,))
        if self.port is None:
            self.port = free_port(self.host, taken=(self.pushgateway_port,))
        config = render_config(
            work / "config", self.targets_file, self.pushgateway_address, self.interval_s
        )
        try:
            self._spawn(
                "pushgateway",
                [
                    self.pushgateway_bin,
                    f"--web.listen-address={self.pushgateway_address}",
                    f"--persistence.file={work / 'pushgateway.data'}",
                    "--log.level=warn",
                ],
            )
            self._spawn(
                "prometheus",
                [
                    self.prometheus_bin,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tsdb}",
                    f"--web.listen-address={self.host}:{self.port}",
                    "--log.level=warn",
                ],
            )
            self._wait_ready("pushgateway", self.pushgateway_url)
            self._wait_ready("prometheus", self.url)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, name: str, args: list[str]) -> None:
        with (self._dir() / f"{name}.log").open("ab") as log:
            self._processes[name] = subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self._dir(),
                start_new_session=True,
            )

    def _wait_ready(self, name: str, url: str) -> None:
        process = self._processes[name]
        deadline = time.monotonic() + self.startup_timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise PrometheusError(
                    f"{name} exited ({process.returncode}) while starting:\n{self._tail(name)}"
                )
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
                    last = f"HTTP {response.status}"
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}"
            except OSError as exc:
                last = str(exc)
            time.sleep(0.2)
        raise PrometheusError(
            f"{name} not ready at {url} after {self.startup_timeout_s:.0f} s ({last}):\n"
            f"{self._tail(name)}"
        )

    def _tail(self, name: str, lines: int = 15) -> str:
        try:
            text = (self._dir() / f"{name}.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> list[int]:
        """Stop both servers by pid (process group: SIGTERM, then SIGKILL after `timeout`),
        Prometheus first; remove the work folder if it was a temporary one. The pids stopped."""
        stopped = []
        for name in ("prometheus", "pushgateway"):
            process = self._processes.pop(name, None)
            if process is None:
                continue
            stop_process_group(process.pid, timeout=timeout)
            with contextlib.suppress(subprocess.TimeoutExpired):  # SIGKILL was sent
                process.wait(timeout=timeout)
            stopped.append(process.pid)
        if self._own_dir and self.work_dir is not None:
            shutil.rmtree(self.work_dir, ignore_errors=True)
            self.work_dir = None
        return stopped

    def __enter__(self) -> LocalPrometheus:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- the HTTP API --------------------------------------------------------------------------

    def query(self, expr: str, at: float | None = None, timeout: float = 10.0) -> list[Any]:
        """An instant query through /api/v1/query: `data.result` (for a vector, a list of
        `{"metric": {labels}, "value": [time, "value"]}`); PrometheusError if it is refused."""
        params = {"query": expr, **({"time": str(at)} if at is not None else {})}
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as exc:  # 400/422/503 carry Prometheus' error as JSON
            try:
                answer = json.loads(exc.read())
            except ValueError:
                raise PrometheusError(f"query {expr!r}: HTTP {exc.code}") from None
        if answer.get("status") != "success":
            raise PrometheusError(
                f"query {expr!r}: {answer.get('errorType', 'error')}: {answer.get('error')}"
            )
        data = answer["data"]
        if data["resultType"] in ("scalar", "string"):
            return [data["result"]]
        return list(data["result"])

    def wait_for(self, expr: str, timeout_s: float = 15.0, poll_s: float = 0.5) -> list[Any]:
        """`query(expr)` until it returns a result; PrometheusError if none in `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            result = self.query(expr)
            if result:
                return result
            if time.monotonic() >= deadline:
                raise PrometheusError(f"no result for {expr!r} after {timeout_s:.0f} s")
            time.sleep(poll_s)
