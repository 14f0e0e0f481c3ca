"""Benchmark: load held while traffic shifts.

Debian's `wrk` drives the local serving target through nginx (`--connections`, 1-row entity
requests cycling over the dataset's labelled applications) while the deployment flow, in this
process, rolls version 2 out as a canary (`--canary-percent`, then promoted to all traffic once
its window passes) and then rolls back to version 1 (`action=rollback`): two nginx reloads for
the canary and the promotion, one for the rollback, and predictor processes started and
stopped behind them (three of each). wrk runs from `--lead` seconds before the rollout until
`--tail` seconds after the rollback, and for at least `--seconds`; then SIGINT, and wrk prints
its summary.

What is timed: wrk's totals (its requests, socket errors and non-2xx answers, its latency
percentiles, all client-side), and per phase nginx's `$request_time` of each request (ms
resolution: first byte read from the client to last byte sent), from the access log. A phase
is what the routing was when the request ended, as a watcher thread read it from the target's
state every 0.1 s (the state is written after each `nginx -s reload`: a request answered just
after a reload may count in the phase before). Everything runs on this machine: wrk, nginx,
the predictors and the flow share the CPUs.

The world it runs in is built first, untimed: a temporary Prefect server
(`prefect_test_harness`), generated credit-risk data (`--rows` transactions), data_prep, two
trained versions, version 1 served as champion; all under a temporary folder removed at the end.

    python -m bench.load                        # 8 connections, at least 60 s
    python -m bench.load --seconds 20 --rows 60000
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from bench.results import add_json_arg, write_json
from bench.serve import PREDICT, WRK_LUA, parse_wrk
from tasks.processes import free_port
from tasks.serving.local_target import LocalTarget

ROOT = Path(__file__).resolve().parents[1]
NAME = "credit-load"


@dataclass
class World:
    """Two trained versions of `name`, the first served as champion; blocks saved as `blocks`."""

    root: Path
    name: str
    blocks: str
    target: LocalTarget
    rows: list[dict[str, Any]]

    @property
    def state_dir(self) -> Path:
        return self.target.folder


def build_world(
    root: Path, rows: int, blocks: str = "load", name: str = NAME, client_keepalive_s: int = 0
) -> World:
    """Generate, prepare, train two versions and serve the first (needs a Prefect API)."""
    from blocks import DaskCluster, FeatureRepo, ModelRegistry, ServingTarget
    from flows.data_prep import DataPrepParams, data_prep
    from flows.deployment import DeploymentParams, deployment
    from flows.generate_data import GenerateDataParams, generate_data
    from flows.training import TrainingParams, training
    from tasks.serving.replay import label_rows, scoring_fields
    from tasks.serving.rollout import RolloutPolicy as Policy
    from tasks.specs.datasets import get_dataset

    raw, out = root / "raw", root / "out"
    generate_data(
        GenerateDataParams(
            rows=rows,
            seed=5,
            start=date.today() - timedelta(days=911),
            end=date.today() - timedelta(days=1),
            out_uri=str(raw),
            chunk_rows=50_000,
        )
    )
    DaskCluster(processes=False, n_workers=1, threads_per_worker=2).save(blocks, overwrite=True)
    repo = FeatureRepo(
        repo_path=str(ROOT / "features"),
        registry_path=str(root / "feast-registry.db"),
        sqlite_path=str(root / "feast-online.db"),
    )
    repo.save(blocks, overwrite=True)
    ModelRegistry(root_uri=str(root / "registry")).save(blocks, overwrite=True)
    target = ServingTarget(
        state_dir=str(root / "serving"),
        port=free_port(),
        online_store=repo.sqlite_path,
        client_keepalive_s=client_keepalive_s,
    )
    target.save(blocks, overwrite=True)
    set_rollout_policy(blocks, Policy(window_requests=200, min_requests=50))
    data_prep(
        DataPrepParams(
            source_uri=str(raw),
            output_uri=str(out),
            dask_cluster_block=blocks,
            feature_repo_block=blocks,
        )
    )
    for seed in (0, 1):
        training(
            TrainingParams(
                data_uri=str(out),
                model_name=name,
                seed=seed,
                feature_repo_block=blocks,
                registry_block=blocks,
            )
        )
    first = deployment(
        DeploymentParams(
            model_name=name,
            version=1,
            target_block=blocks,
            policy_block=blocks,
            registry_block=blocks,
        )
    )
    if first.decision != "promoted":
        raise RuntimeError(f"version 1 was not served: {first}")
    spec = get_dataset("credit_risk")
    fields = scoring_fields(spec, next(iter(spec.feature_services)))
    sample = label_rows(raw, spec).head(2_000)[fields]
    return World(
        root=root,
        name=name,
        blocks=blocks,
        target=LocalTarget(target.local_settings(), name),
        rows=json.loads(sample.to_json(orient="records")),
    )


def set_rollout_policy(blocks: str, policy: Any) -> None:
    from blocks import RolloutPolicy

    RolloutPolicy(policy=policy).save(blocks, overwrite=True)


def deploy(world: World, **params: Any) -> Any:
    """Run the deployment flow on the world's blocks."""
    from flows.deployment import DeploymentParams, deployment

    return deployment(
        DeploymentParams(
            model_name=world.name,
            target_block=world.blocks,
            policy_block=world.blocks,
            registry_block=world.blocks,
            **params,
        )
    )


# -- watching the routing --------------------------------------------------------------------


class RoutingWatch:
    """Reads the target's state every `interval` s: (time, phase label) at each change. A
    `mark` (e.g. a process killed) starts a phase of its own, until the routing changes."""

    def __init__(self, state_dir: Path, interval: float = 0.1) -> None:
        self.path = state_dir / "state.json"
        self.interval = interval
        self.changes: list[tuple[float, str]] = []
        self._note: tuple[str, str] | None = None  # (routing when marked, note)
        self._last = "starting"
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def mark(self, note: str) -> None:
        with self._lock:
            self._note = (self.routing(), note)
            self.changes.append((time.time(), f"{self._note[0]}, {note}"))

    def label(self) -> str:
        routing = self.routing()
        if self._note is not None and self._note[0] == routing:
            return f"{routing}, {self._note[1]}"
        self._note = None
        return routing

    def routing(self) -> str:
        try:
            state = json.loads(self.path.read_text())
        except (OSError, ValueError):  # being replaced: the routing stands as it was
            return self._last
        self._last = self._routing(state)
        return self._last

    @staticmethod
    def _routing(state: dict[str, Any]) -> str:
        routing = state.get("routing")
        if not routing:
            return "no routing"
        version = {p["pid"]: p["version"] for p in state["predictors"]}
        main = f"v{version.get(routing['main'], '?')}"
        if routing.get("canary"):
            share = routing["canary_percent"]
            canary = version.get(routing["canary"], "?")
            return f"{main} {100 - share}% + canary v{canary} {share}%"
        if routing.get("shadow"):
            return f"{main} + shadow v{version.get(routing['shadow'], '?')}"
        return f"{main} alone"

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                now, label = time.time(), self.label()
                if not self.changes or self.changes[-1][1] != label:
                    self.changes.append((now, label))
            time.sleep(self.interval)

    def __enter__(self) -> RoutingWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# -- the run ---------------------------------------------------------------------------------


def wrk_script(rows: list[dict[str, Any]], folder: Path) -> Path:
    bodies = [json.dumps({"jsonData": {"rows": [row]}}) for row in rows]
    path = folder / "load.lua"
    path.write_text(WRK_LUA % ",\n".join(json.dumps(b) for b in bodies))
    return path


def phases(
    access_log: Path, offset: int, changes: list[tuple[float, str]], started: float
) -> list[dict[str, Any]]:
    """Per routing phase (in order; a phase seen twice is two rows): requests, errors (an answer
    other than 200; 499, the client gone first, excepted) and nginx's request time
    percentiles, from the access log written after `offset`."""
    with access_log.open("rb") as log:
        log.seek(offset)
        lines = [json.loads(line) for line in log.read().splitlines() if line.strip()]
    lines = [x for x in lines if "predictions" in x.get("uri", "")]
    bounds = [*changes, (float("inf"), "")]
    out = []
    for (begin, label), (end, _) in itertools.pairwise(bounds):
        mine = [x for x in lines if begin <= float(x["msec"]) < end]
        times = np.asarray([float(x["request_time"]) * 1000 for x in mine])
        statuses = [int(x["status"]) for x in mine]
        row: dict[str, Any] = {
            "phase": label,
            "from_s": round(max(begin - started, 0.0), 1),
            "requests": len(mine),
            # 499: the client closed first (wrk stopping with requests in flight)
            "errors": sum(s not in (200, 499) for s in statuses),
            "statuses": {str(s): statuses.count(s) for s in sorted(set(statuses))},
        }
        for name, q in (("p50_ms", 50), ("p99_ms", 99), ("p99_9_ms", 99.9)):
            row[name] = float(np.percentile(times, q)) if len(times) else None
        out.append(row)
    return out


def load_through_rollout(
    world: World,
    seconds: float,
    connections: int = 8,
    threads: int = 2,
    lead_s: float = 5.0,
    hold_s: float = 5.0,
    tail_s: float = 5.0,
    mid_run: Callable[[World, RoutingWatch], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """wrk through nginx while `mid_run` (default: rollout of v2, then rollback) changes the
    routing; wrk's totals, the flows' decisions and the per-phase table."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed (Debian package wrk; `make setup`)")
    script = wrk_script(world.rows, world.root)
    access_log = world.state_dir / "access.log"
    offset = access_log.stat().st_size if access_log.exists() else 0
    command = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        "-d3600s",
        "--latency",
        "-s",
        str(script),
        world.target.url + PREDICT,
    ]
    started = time.time()
    with RoutingWatch(world.state_dir) as watch:
        client = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            time.sleep(lead_s)
            decisions = (mid_run or rollout_then_rollback(hold_s))(world, watch)
            time.sleep(max(tail_s, started + seconds - time.time()))
        finally:
            client.send_signal(signal.SIGINT)
            out, err = client.communicate(timeout=30)
        time.sleep(0.3)  # the watcher's last look
    if client.returncode != 0:
        raise RuntimeError(f"wrk failed ({client.returncode}): {err.strip()}")
    totals = parse_wrk(out)
    table = phases(access_log, offset, watch.changes, started)
    return {
        "seconds": round(time.time() - started, 1),
        "connections": connections,
        "wrk": totals,
        "decisions": decisions,
        "phases": table,
        "failed_requests": totals["non_2xx"] + sum(totals["socket_errors"].values()),
    }


def rollout_then_rollback(hold_s: float) -> Callable[[World, RoutingWatch], dict[str, Any]]:
    def run(world: World, watch: RoutingWatch) -> dict[str, Any]:
        out = deploy(world, version=2)
        time.sleep(hold_s)
        back = deploy(world, action="rollback", reason="bench.load: the rollback under load")
        return {
            "rollout": {"decision": out.decision, "reasons": out.reasons},
            "rollback": {"decision": back.decision, "champion": back.champion},
        }

    return run


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def print_report(result: dict[str, Any]) -> None:
    w = result["wrk"]
    print(
        f"\nwrk, {result['connections']} connections, {w['seconds']:.1f} s: {w['requests']} "
        f"requests, non-2xx {w['non_2xx']}, socket errors {w['socket_errors']}, "
        f"p50 {w['percentiles_ms'].get(50)} ms, p99 {w['percentiles_ms'].get(99)} ms "
        "(client-side)"
    )
    print(f"decisions: {result['decisions']}")
    print("\nper phase (nginx $request_time, ms resolution):")
    print(
        f"{'phase':34} {'from':>6} {'requests':>9} {'errors':>7} {'p50':>6} {'p99':>6} {'p99.9':>7}"
    )
    for p in result["phases"]:
        cells = [_ms(p[k]) for k in ("p50_ms", "p99_ms", "p99_9_ms")]
        print(
            f"{p['phase']:34} {p['from_s']:>5.1f}s {p['requests']:>9} {p['errors']:>7} "
            f"{cells[0]:>6} {cells[1]:>6} {cells[2]:>7}"
        )
    print(f"\nfailed requests (non-2xx + socket errors): {result['failed_requests']} (target: 0)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="wrk runs at least this long")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="wrk's threads")
    parser.add_argument("--rows", type=int, default=150_000, help="generated transactions")
    parser.add_argument("--canary-percent", type=int, default=10)
    parser.add_argument("--window", type=int, default=200, help="challenger predictions to see")
    parser.add_argument("--lead", type=float, default=8.0, help="s of load before the rollout")
    parser.add_argument("--hold", type=float, default=8.0, help="s between promotion and rollback")
    parser.add_argument("--tail", type=float, default=5.0, help="s of load after the rollback")
    parser.add_argument(
        "--client-keepalive-s",
        type=int,
        default=0,
        help="the serving target's nginx keep-alive for clients (default 0: none)",
    )
    add_json_arg(parser, "load")
    args = parser.parse_args()

    from prefect.testing.utilities import prefect_test_harness

    from tasks.serving.rollout import RolloutPolicy as Policy

    root = Path(tempfile.mkdtemp(prefix="bench-load-"))
    world = None
    try:
        with prefect_test_harness(server_startup_timeout=120):
            print("building the world (data_prep, two versions, v1 served) ...", flush=True)
            began = time.monotonic()
            world = build_world(root, args.rows, client_keepalive_s=args.client_keepalive_s)
            set_rollout_policy(
                world.blocks,
                Policy(
                    canary_percent=args.canary_percent,
                    window_requests=args.window,
                    min_requests=min(50, args.window),
                ),
            )
            print(f"world built in {time.monotonic() - began:.0f} s; wrk starts", flush=True)
            result = load_through_rollout(
                world,
                args.seconds,
                connections=args.connections,
                threads=args.threads,
                lead_s=args.lead,
                hold_s=args.hold,
                tail_s=args.tail,
            )
    finally:
        if world is not None:
            world.target.stop_all()
        shutil.rmtree(root, ignore_errors=True)
    print_report(result)
    write_json(args.json, "load", args, result)


if __name__ == "__main__":
    main()
