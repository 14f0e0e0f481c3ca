"""Orchestration faults on real parts: the session's `prefect server start` (PostgreSQL), a
process work pool and `prefect worker start`. A training run's process killed with SIGKILL
mid-training; the server restarted while a monitoring run works on drifted traffic. The state
afterwards is read through Prefect's API, the registry and the monitoring folder."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect import Flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import StateType
from prefect.deployments import run_deployment

from bench.load import World
from blocks import ModelRegistry, MonitoringPolicy
from flows.local_server import LocalServer
from flows.monitoring import EPISODES
from tasks.monitoring.episodes import DRIFT
from tasks.monitoring.policy import MonitoringPolicy as Watch
from tasks.serving.replay import Traffic
from tests.servers import BIN, ROOT, Processes, final_run, flow_run, prefect, wait_for

pytestmark = pytest.mark.faults


def _task_states(run_id: uuid.UUID) -> dict[str, StateType]:
    with get_client(sync_client=True) as client:
        tasks = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
        )
    return {t.name: t.state.type for t in tasks if t.state is not None}


def _worker(env: dict[str, str], processes: Processes, pool: str) -> None:
    prefect(env, "work-pool", "create", pool, "--type", "process", "--overwrite")
    processes.start(
        "worker",
        [str(BIN / "prefect"), "worker", "start", "-p", pool],
        env={**env, "PREFECT_WORKER_QUERY_SECONDS": "2"},
    )


def _deploy(entrypoint: str, name: str, pool: str) -> uuid.UUID:
    flow = Flow.from_source(source=str(ROOT), entrypoint=entrypoint)
    return flow.deploy(name=name, work_pool_name=pool, print_next_steps=False, ignore_warnings=True)


@pytest.mark.timeout(420)
def test_a_training_run_killed_mid_training_crashes_and_leaves_no_version(
    world: World, prefect_env, api, processes
) -> None:
    registry = ModelRegistry.load(world.blocks).registry()
    before = [v.version for v in registry.versions(world.name)]
    folder = Path(registry.root) / world.name  # the local registry's model folder
    listing = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    pool = "faults-training"
    _worker(prefect_env, processes, pool)
    deployment_id = _deploy("flows/training.py:training", pool, pool)
    params = {
        "model_name": world.name,
        "data_uri": str(world.root / "out"),
        "feature_repo_block": world.blocks,
        "registry_block": world.blocks,
        # 4,000 rounds on one thread (no early stop): seconds of training to be killed in
        "lightgbm": {"num_boost_round": 4000, "early_stopping_rounds": 4000, "num_threads": 1},
    }

    run = run_deployment(deployment_id, parameters={"params": params}, timeout=0)

    def training_task_running() -> bool:
        final = final_run(run.id)
        assert final is None, (final.state, processes.log("worker")[-3000:])
        return _task_states(run.id).get("train-lightgbm") == StateType.RUNNING

    wait_for(training_task_running, 240, "the train task to run", interval=0.1)
    pid = int(str(flow_run(run.id).infrastructure_pid).rsplit(":", 1)[-1])
    os.kill(pid, signal.SIGKILL)  # the run's process, as the OOM killer would
    crashed = wait_for(lambda: final_run(run.id), 120, "the killed run to end", interval=1)
    assert crashed.state is not None and crashed.state.type == StateType.CRASHED, crashed.state
    assert [v.version for v in registry.versions(world.name)] == before
    # nothing visible was left half-written (a hidden staging folder at most)
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == listing

    again = run_deployment(deployment_id, parameters={"params": params}, timeout=0)
    done = wait_for(lambda: final_run(again.id), 300, "the re-run", interval=1)
    assert done.state is not None and done.state.is_completed(), (
        done.state,
        processes.log("worker")[-3000:],
    )
    after = [v.version for v in registry.versions(world.name)]
    assert after == [*before, max(before) + 1], after
    assert registry.aliases(world.name).get("champion") == 1
    print(f"killed pid {pid} mid-training: {crashed.state.name}; re-run registered v{after[-1]}")


def _drift_events(api_url: str, name: str) -> list[dict[str, Any]]:
    body = {
        "filter": {
            "event": {"name": [DRIFT]},
            "resource": {"id": [f"mlops.model.{name}"]},
            "occurred": {"since": "2000-01-01T00:00:00Z"},
        },
        "limit": 50,
    }
    answer = httpx.post(f"{api_url}/events/filter", json=body, timeout=10)
    answer.raise_for_status()
    return list(answer.json()["events"])


@pytest.mark.timeout(480)
def test_the_server_restarted_mid_loop_loses_no_drift_event(
    world: World, prefect_server: LocalServer, prefect_env, api, processes
) -> None:
    MonitoringPolicy(
        policy=Watch(window_rows=300, min_rows=100, settle_s=0, reemit_after_s=0)
    ).save(world.blocks, overwrite=True)
    pool = "faults-monitoring"
    _worker(prefect_env, processes, pool)
    deployment_id = _deploy("flows/monitoring.py:monitoring", pool, pool)
    params = {
        "model_name": world.name,
        "target_block": world.blocks,
        "policy_block": world.blocks,
        "registry_block": world.blocks,
    }
    # drifted traffic: the same applicants asking for loans 4x larger
    drifted = [{**row, "loan_amount": row["loan_amount"] * 4} for row in world.rows[:700]]
    with Traffic(world.target.url, drifted, pause_s=0.0) as traffic:
        wait_for(lambda: sum(traffic.statuses.values()) >= 700, 120, "700 drifted requests")
    assert set(traffic.statuses) == {200}, traffic.statuses

    run = run_deployment(deployment_id, parameters={"params": params}, timeout=0)
    wait_for(
        lambda: flow_run(run.id).state.type == StateType.RUNNING, 120, "the monitoring run to start"
    )
    prefect_server.stop()  # mid-run: its API calls and its event meet a closed port
    time.sleep(3)
    prefect_server.start(timeout=180)
    first = wait_for(lambda: final_run(run.id), 240, "the interrupted run to end", interval=1)
    # its API calls rode out the restart (Prefect's client retries a refused connection)
    assert first.state is not None and first.state.is_completed(), (
        first.state,
        processes.log("worker")[-4000:],
    )

    # the worker (the same process, never restarted) reconnected: it runs the next one
    again = run_deployment(deployment_id, parameters={"params": params}, timeout=0)
    second = wait_for(lambda: final_run(again.id), 240, "the next monitoring run", interval=1)
    assert second.state is not None and second.state.is_completed(), (
        second.state,
        processes.log("worker")[-4000:],
    )
    episodes = json.loads((world.target.folder / "monitoring" / EPISODES).read_text())
    drift = [e for e in episodes if e["event"] == DRIFT]
    assert drift, episodes
    ids = set(drift[0]["event_ids"])
    stored = wait_for(  # events are written in batches
        lambda: [e for e in _drift_events(prefect_server.api_url, world.name) if e["id"] in ids],
        30,
        "the drift event in the server's database",
    )
    assert stored[0]["payload"]["version"] == 1
    assert any("loan_amount" in str(e["payload"]) for e in stored), stored
