"""Prometheus for the platform: promtool accepts the rendered config and the rules, the rules'
unit tests pass, and a real Prometheus + Pushgateway on loopback read back a pushed gauge and a
file_sd target, then are gone by pid."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest

from tasks.monitoring.prometheus import (
    CONFIG_DIR,
    MONITORING_JOB,
    LocalPrometheus,
    refresh_serving_targets,
    render_config,
    serving_target_groups,
    write_serving_targets,
)
from tasks.processes import stop_process_group
from tasks.serving.local_target import LAUNCHER, STATE, Predictor

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("promtool") is None or shutil.which("prometheus-pushgateway") is None,
        reason="Debian's prometheus and prometheus-pushgateway are not installed (make system)",
    ),
]

# a predictor's samples carry model, version and role themselves (the model server's tags), as
# its target does: honor_labels keeps one set (no exported_model, ...)
METRICS = b"""# HELP mlops_fake_up A fake predictor's metric.
# TYPE mlops_fake_up gauge
mlops_fake_up{method="predict",model="m1",version="3",role="main"} 42
mlops_fake_up{method="feedback"} 1
"""


@dataclass(frozen=True)
class FakePredictor:
    role: str
    version: int
    metrics_port: int
    host: str = "127.0.0.1"


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=30, check=False
    )


def test_promtool_accepts_the_rendered_config_and_the_rules(tmp_path: Path) -> None:
    targets = write_serving_targets(
        tmp_path / "targets" / "serving.json",
        {"credit_risk": [FakePredictor("canary", 4, 6002), FakePredictor("main", 3, 6001)]},
    )
    assert json.loads(targets.read_text()) == [
        {
            "targets": ["127.0.0.1:6002"],
            "labels": {"model": "credit_risk", "version": "4", "role": "canary"},
        },
        {
            "targets": ["127.0.0.1:6001"],
            "labels": {"model": "credit_risk", "version": "3", "role": "main"},
        },
    ]
    config = render_config(tmp_path / "prom", targets, "127.0.0.1:9091", interval_s=2)
    text = config.read_text()
    assert "${" not in text and "scrape_interval: 2s" in text
    assert (tmp_path / "prom" / "rules.yml").read_bytes() == (CONFIG_DIR / "rules.yml").read_bytes()

    checked = promtool("check", "config", str(config))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 5 rules found" in checked.stdout + checked.stderr
    rules = promtool("check", "rules", str(CONFIG_DIR / "rules.yml"))
    assert rules.returncode == 0, rules.stdout + rules.stderr


def test_promtool_rule_unit_tests_pass() -> None:
    done = promtool("test", "rules", "rules_test.yml", cwd=CONFIG_DIR)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr


@pytest.fixture
def fake_predictor() -> Iterator[int]:
    """A tiny HTTP server answering GET /metrics with a fixed text; its port."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/metrics":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(METRICS)))
            self.end_headers()
            self.wfile.write(METRICS)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def running_predictor() -> Iterator[int]:
    """A process whose command line holds the local target's launcher (what its state checks
    a recorded pid against); its pid."""
    process = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", LAUNCHER], start_new_session=True
    )
    try:
        yield process.pid
    finally:
        stop_process_group(process.pid, timeout=5)
        process.wait(timeout=5)


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def _write_state(folder: Path, predictors: list[tuple[str, int, int, int]]) -> None:
    """A state file as tasks/serving/local_target.py writes it."""
    folder.mkdir(parents=True)
    recorded = [
        asdict(Predictor(role, version, "/models/m1", 0, metrics_port, pid))
        for role, version, metrics_port, pid in predictors
    ]
    state = {"predictors": recorded, "routing": None, "nginx_pid": None}
    (folder / STATE).write_text(json.dumps(state))


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_local_prometheus_reads_back_a_push_and_a_file_sd_target(
    tmp_path: Path, fake_predictor: int, running_predictor: int
) -> None:
    targets = tmp_path / "serving_targets.json"
    state_dir = tmp_path / "serving"
    # no state yet: an empty targets file
    assert refresh_serving_targets(state_dir, targets) == 0
    assert json.loads(targets.read_text()) == []
    _write_state(
        state_dir / "m1",
        [("main", 3, fake_predictor, running_predictor), ("canary", 4, 1, _dead_pid())],
    )

    with LocalPrometheus(tmp_path / "prometheus", targets_file=targets, interval_s=1) as prom:
        pids = prom.pids
        assert set(pids) == {"prometheus", "pushgateway"}
        assert all(not _gone(pid) for pid in pids.values())

        # the monitoring flow's push: PUT of the text format, grouped by model
        body = (
            b"# TYPE mlops_live_auc gauge\n"
            b'mlops_live_auc{version="3"} 0.71\n'
            b"# TYPE mlops_live_auc_floor gauge\n"
            b"mlops_live_auc_floor 0.75\n"
        )
        request = urllib.request.Request(
            f"{prom.pushgateway_url}/metrics/job/{MONITORING_JOB}/model/m1",
            data=body,
            method="PUT",
            headers={"Content-Type": "text/plain; version=0.0.4"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status in (200, 202)

        # a predictor appears in the local target's state: the targets file is rewritten from
        # it and Prometheus picks it up with no restart (the predictor that is gone is left out)
        assert refresh_serving_targets(state_dir, targets) == 1

        [auc] = prom.wait_for('mlops_live_auc{model="m1"}', timeout_s=15)
        assert auc["metric"]["job"] == MONITORING_JOB  # honor_labels kept the pushed job
        assert auc["metric"]["version"] == "3"
        assert float(auc["value"][1]) == pytest.approx(0.71)

        [scraped] = prom.wait_for('mlops_fake_up{method="predict"}', timeout_s=15)
        assert scraped["metric"] == {
            "__name__": "mlops_fake_up",
            "job": "mlops_serving",
            "instance": f"127.0.0.1:{fake_predictor}",
            "method": "predict",
            "model": "m1",
            "version": "3",
            "role": "main",
        }
        assert float(scraped["value"][1]) == 42
        # a sample without them gets the target's
        [other] = prom.query('mlops_fake_up{method="feedback"}')
        assert (other["metric"]["model"], other["metric"]["role"]) == ("m1", "main")

        # the alert rules are loaded and evaluated against what was pushed
        [alert] = prom.wait_for('ALERTS{alertname="LiveAUCBelowFloor"}', timeout_s=15)
        assert alert["metric"]["model"] == "m1"
        assert alert["metric"]["alertstate"] == "firing"

    assert prom.pids == {}
    assert all(_gone(pid) for pid in pids.values()), pids


def test_serving_target_groups_are_ordered() -> None:
    groups = serving_target_groups(
        {"b": [FakePredictor("main", 1, 7001)], "a": [FakePredictor("shadow", 2, 7003)]}
    )
    assert [g["labels"]["model"] for g in groups] == ["a", "b"]
