"""Serving under load and faults: wrk through nginx while the deployment flow shifts traffic
(bench/load.py's run, shorter), and a challenger killed mid-canary. The state afterwards is
read from the registry (aliases, rollout records) and the serving target (routing, processes).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from typing import Any

import pytest

from bench.load import (
    RoutingWatch,
    World,
    deploy,
    load_through_rollout,
    print_report,
    set_rollout_policy,
)
from blocks import ModelRegistry
from tasks.serving.local_target import Routing, http_json
from tasks.serving.rollout import RolloutPolicy as Policy

pytestmark = pytest.mark.faults


def _registry():
    return ModelRegistry.load("faults").registry()


def _newest_rollout(name: str, version: int) -> dict[str, Any]:
    registry = _registry()
    stamp = registry.records(name, version, "rollout")[-1]
    return json.loads(registry.read_record(name, version, "rollout", stamp, "rollout.json"))


def _serves_v1_alone(world: World) -> None:
    routing = world.target.routing()
    main = [p for p in world.target.predictors() if routing and p.pid == routing.main]
    assert routing == Routing(main=main[0].pid) and main[0].version == 1, routing
    assert {p.version for p in world.target.predictors()} == {1}
    status, answer = http_json(
        f"{world.target.url}/api/v1.0/predictions", {"jsonData": {"rows": world.rows[:3]}}
    )
    assert status == 200 and len(answer["data"]["ndarray"]) == 3, answer


@pytest.mark.timeout(420)
def test_load_is_held_through_canary_promotion_and_rollback(world: World, api) -> None:
    set_rollout_policy(
        world.blocks,
        Policy(canary_percent=10, window_requests=100, min_requests=30, window_timeout_s=120),
    )
    result = load_through_rollout(world, seconds=0, lead_s=3, hold_s=3, tail_s=3)
    print_report(result)

    assert result["decisions"]["rollout"]["decision"] == "promoted", result["decisions"]
    assert result["decisions"]["rollback"] == {"decision": "rolled-back", "champion": 1}
    seen = [p["phase"] for p in result["phases"]]
    for phase in ("v1 alone", "v1 90% + canary v2 10%", "v2 alone"):
        assert phase in seen, seen
    assert seen[-1] == "v1 alone", seen
    assert all(p["requests"] > 0 for p in result["phases"] if p["phase"] != "starting"), result
    # nothing failed, by wrk's count and by nginx's, and nginx logged what wrk sent (wrk stops
    # with up to one request in flight per connection)
    assert result["failed_requests"] == 0, result["wrk"]
    assert sum(p["errors"] for p in result["phases"]) == 0, result["phases"]
    logged = sum(p["requests"] for p in result["phases"])
    assert 0 <= logged - result["wrk"]["requests"] <= result["connections"], (logged, result)
    assert _registry().aliases(world.name)["champion"] == 1
    _serves_v1_alone(world)


def kill_the_canary(world: World, watch: RoutingWatch) -> dict[str, Any]:
    """Roll v2 out with a window it cannot finish; SIGKILL its process once it has traffic."""
    killed: dict[str, Any] = {}

    def killer() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            routing = world.target.routing()
            if routing is not None and routing.canary is not None:
                time.sleep(2)  # some traffic reached it
                watch.mark("canary v2 killed")
                killed["at"] = time.time()
                killed["pid"] = routing.canary
                os.killpg(routing.canary, signal.SIGKILL)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=killer)
    thread.start()
    try:
        result = deploy(world, version=2)
    finally:
        thread.join()
    return {"decision": result.decision, "reasons": result.reasons, "killed": killed}


@pytest.mark.timeout(300)
def test_a_challenger_killed_mid_canary_is_rolled_back_while_the_champion_serves(
    world: World, api
) -> None:
    set_rollout_policy(
        world.blocks,
        Policy(canary_percent=10, window_requests=1_000_000, min_requests=1, window_timeout_s=120),
    )
    aliases = _registry().aliases(world.name)
    history = len(_registry().alias_history(world.name, "champion"))
    result = load_through_rollout(world, seconds=0, lead_s=2, tail_s=2, mid_run=kill_the_canary)
    print_report(result)

    decision = result["decisions"]
    assert decision["killed"], "the canary was never routed to"
    assert decision["decision"] == "rolled-back", decision
    assert any("died" in r for r in decision["reasons"]), decision
    # detected within the window's 1 s poll, not at its 120 s timeout
    phases = {p["phase"]: p for p in result["phases"]}
    detection = phases["v1 90% + canary v2 10%, canary v2 killed"]
    after = result["phases"][-1]
    detected_s = after["from_s"] - detection["from_s"]
    print(f"from the kill to the champion alone: {detected_s:.1f} s")
    assert after["phase"] == "v1 alone" and detected_s < 5, result
    # the champion kept serving: nginx sends a request the dead canary refused or cut off to
    # the champion (predictions only: deployments/nginx.py), so no client saw an error
    print(f"errors seen by clients during detection: {detection['errors']}")
    assert [p["errors"] for p in result["phases"]] == [0] * len(result["phases"]), result
    assert result["failed_requests"] == 0, result["wrk"]
    assert _registry().aliases(world.name) == aliases
    assert len(_registry().alias_history(world.name, "champion")) == history
    record = _newest_rollout(world.name, 2)
    assert record["decision"] == "rolled-back" and record["stage"] == "window", record
    assert any("died" in r for r in record["reasons"]), record
    _serves_v1_alone(world)
