"""`make demo`: the whole loop on embedded defaults, on this machine.

Set-up (a local Prefect server, the `mlops-local` process pool and its worker, the blocks, every
deployment with its schedule and automations), the pipeline (data, data_prep, training,
validation, the first champion served), traffic from the time-later applications (undrifted,
then drifted while new data lands), monitoring on the worker, and the automation's retraining:
gates, canary, promote or roll back. The server, the worker and the served model keep running
(`make stop` stops them, by pid).

The demo owns the default dataset's workspace (`data/credit_risk`, `data/feast`, the model in
`data/registry` and `data/serving`) and resets it each run; the generated data is kept in
`data/demo` and reused.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from prefect import flow

from tasks.progress import progress
from tasks.serving.replay import Replayed, Traffic, label_rows, replay, scoring_fields
from tasks.specs.datasets import DEFAULT_DATASET, default_model, get_dataset

DEMO_DIR = Path("data/demo")
DEMO_ROWS = 500_000  # card transactions; ~10,000 applications, ~2,000 in the last 90 days
SEED = 0  # (seed 3's 2,000 recent applicants spend more than its reference: KS p=0.03 by chance)
HISTORY_DAYS = 900
DRIFT_DAYS = 400  # the drifted world: larger loans for the last DRIFT_DAYS
REPLAY_DAYS = 90  # time-later applications: labels not yet known when the model was trained
DEMO_P_VALUE = 0.01  # the demo's drift test level (default 0.05)
PHASE_ROWS = 1_000  # replayed per phase: one of monitoring's 1,000-row windows
POOL = "mlops-local"
WAIT_RETRAINING_S = 900


class Clock:
    """Elapsed time per step, printed as it goes."""

    def __init__(self, out: Callable[[str], None]) -> None:
        self.began = time.monotonic()
        self.out = out
        self.steps: dict[str, float] = {}

    def step(self, name: str, began: float) -> None:
        self.steps[name] = time.monotonic() - began
        self.out(f"[{time.monotonic() - self.began:7.1f} s] {name} ({self.steps[name]:.1f} s)")


def generated(rows: int, regenerate: bool, end: date, drift: str) -> tuple[Path, Path]:
    """The demo's raw data, undrifted and with the column `drift` shifted for the last
    DRIFT_DAYS (generated once, then reused)."""
    from flows.generate_data import GenerateDataParams, generate_data

    base, drifted = DEMO_DIR / "base", DEMO_DIR / "drifted"
    stamp = DEMO_DIR / "generated.txt"
    wanted = f"rows={rows} seed={SEED} end={end} drift={drift}"
    if regenerate or not stamp.exists() or stamp.read_text() != wanted:
        shutil.rmtree(DEMO_DIR, ignore_errors=True)
        common = GenerateDataParams(
            rows=rows, seed=SEED, start=end - timedelta(days=HISTORY_DAYS), end=end
        )
        generate_data(common.model_copy(update={"out_uri": str(base)}))
        generate_data(
            common.model_copy(
                update={
                    "out_uri": str(drifted),
                    "drift_start": end - timedelta(days=DRIFT_DAYS),
                    "covariate_drift": (drift,),
                }
            )
        )
        stamp.write_text(wanted)
    return base, drifted


def reset_workspace(model: str, source: Path) -> None:
    """Stop the demo model's serving and remove its state; the source gets the base data."""
    from blocks import FeatureRepo, ModelRegistry, ServingTarget
    from tasks.serving.local_target import LocalTarget

    target = ServingTarget()
    LocalTarget(target.local_settings(), model).stop_all()
    feast = FeatureRepo()
    for path in (
        Path(target.state_dir) / model,
        Path(ModelRegistry().root_uri) / model,
        Path(feast.registry_path),
        Path(feast.sqlite_path),
        source.parent,
    ):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def copy_tables(src: Path, dst: Path) -> None:
    """Each table's files from `src` into `dst` (new files: newer than any snapshot)."""
    for table in sorted(p for p in src.iterdir() if p.is_dir()):
        (dst / table.name).mkdir(parents=True, exist_ok=True)
        for part in table.iterdir():
            shutil.copyfile(part, dst / table.name / part.name)


def newest_record(registry: Any, model: str, version: int, kind: str, file: str) -> Any:
    import json

    stamps = registry.records(model, version, kind)
    return (
        json.loads(registry.read_record(model, version, kind, stamps[-1], file)) if stamps else None
    )


def wait_retraining(since: datetime, timeout: float) -> Any:
    """The first retraining run scheduled after `since` that ran to an end (a run the
    deployment's concurrency limit cancelled is not it)."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
    )

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("retraining/retraining")
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
                flow_run_filter=FlowRunFilter(
                    expected_start_time=FlowRunFilterExpectedStartTime(after_=since)  # type: ignore[arg-type]
                ),
            )
            ended = [
                r
                for r in runs
                if r.state and r.state.type.value in ("COMPLETED", "FAILED", "CRASHED")
            ]
            if ended:
                return ended[0]
            time.sleep(3)
    raise TimeoutError(f"no retraining run ended within {timeout:.0f} s of the drift")


def run_monitoring(model: str) -> None:
    """One monitoring run of the deployment, on the worker."""
    from prefect.deployments import run_deployment

    run: Any = run_deployment(
        "monitoring/monitoring", parameters={"params": {"model_name": model}}, timeout=600
    )
    if run.state is None or not run.state.is_completed():
        raise RuntimeError(f"monitoring run {run.id} ended {run.state}")


@flow(name="replay-traffic", log_prints=True)
def replay_traffic(
    url: str, raw: str, since: date, seed: int, rows: int, fields: list[str], phase: str
) -> Replayed:
    """One phase of the demo's traffic: `rows` time-later labelled rows of the raw tables at
    `raw`, sent one per request, each answer's label back through the feedback endpoint."""
    import pandas as pd

    spec = get_dataset(DEFAULT_DATASET)
    frame = label_rows(raw, spec, pd.Timestamp(since, tz="UTC"), seed).iloc[:rows]
    if len(frame) < rows:
        raise ValueError(f"{raw}: {len(frame)} labelled rows since {since}, {rows} wanted")
    with progress(f"Replaying {phase} traffic", total=len(frame)) as bar:
        seen = replay(url, frame, fields, label=spec.label.column, on_batch=bar.advance)
    p50, p99 = (1000 * (seen.percentile(q) or 0) for q in (50, 99))
    print(f"{phase}: {seen.rows} rows, {seen.labelled} labels; p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    return seen


def run_demo(
    rows: int = DEMO_ROWS, regenerate: bool = False, out: Callable[[str], None] = print
) -> dict[str, Any]:
    """The loop end to end; returns the summary it prints."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.local_server import default_server, default_worker, prefect_cli

    clock = Clock(out)
    began = time.monotonic()
    api = os.environ.get("PREFECT_API_URL")
    server = None if api else default_server()
    if server is not None:
        server.start()
        api = server.api_url
    assert api is not None
    ui = api.removesuffix("/api")
    env = {**os.environ, "PREFECT_API_URL": api}
    prefect_cli(env, "work-pool", "create", POOL, "--type", "process", "--overwrite")
    prefect_cli(env, "block", "register", "-m", "blocks")
    prefect_cli(env, "--no-prompt", "deploy", "--all")
    worker = default_worker().start(env)
    clock.step(f"set-up: server {ui}, pool {POOL}, worker pid {worker}, deployments", began)
    with temporary_settings(updates={PREFECT_API_URL: api}):
        return _loop(rows, regenerate, clock, ui, out)


def _loop(
    rows: int, regenerate: bool, clock: Clock, ui: str, out: Callable[[str], None]
) -> dict[str, Any]:
    import numpy as np
    import pandas as pd
    from prefect.variables import Variable

    from blocks import ModelRegistry, MonitoringPolicy, ServingTarget
    from blocks.loop_settings import VARIABLE
    from flows.data_prep import DataPrepParams, data_prep
    from flows.deployment import DeploymentParams, deployment
    from flows.local_server import cancel_active_runs
    from flows.training import TrainingParams, training
    from flows.validation import ValidationParams, validation
    from tasks.monitoring.lineage import lineage_lines, read_lineage
    from tasks.monitoring.policy import MonitoringPolicy as Watch
    from tasks.serving.local_target import LocalTarget

    # the automated loop on embedded defaults, but for a stricter drift test: at p 0.05 one
    # undrifted window in 20 may alarm, and an open episode would hold the real drift back
    MonitoringPolicy(policy=Watch(p_value=DEMO_P_VALUE)).save("demo-watch", overwrite=True)
    Variable.set(VARIABLE, {"monitoring_policy_block": "demo-watch"}, overwrite=True)
    spec = get_dataset(DEFAULT_DATASET)
    model = default_model()
    source = Path(spec.source.uri)
    # data up to midnight: served trailing windows (as of now) miss only today's hours
    end = date.today()

    began = time.monotonic()
    cancelled = cancel_active_runs()
    if cancelled:
        out(f"cancelled the loop's runs still going: {cancelled}")
    # the drifted world: the first request field monitoring watches
    if spec.request is None:
        raise ValueError(f"dataset '{spec.name}' declares no request: the demo replays requests")
    drift = next(f for f in spec.request.fields if f in spec.monitoring.drift_features)
    base, drifted = generated(rows, regenerate, end, drift)
    reset_workspace(model, source)
    copy_tables(base, source)
    clock.step(f"data: {rows:,} rows in {DEMO_DIR} (undrifted and drifted), source {source}", began)

    began = time.monotonic()
    prepared = data_prep(DataPrepParams())
    trained = training(TrainingParams())
    validated = validation(ValidationParams(model_name=trained.model, candidate=trained.version))
    served = deployment(DeploymentParams(model_name=trained.model))
    clock.step(
        f"pipeline: snapshot {prepared.snapshot}, {model} v{trained.version} "
        f"{validated.decision}, {served.decision}",
        began,
    )

    registry = ModelRegistry().registry()
    target = LocalTarget(ServingTarget().local_settings(), model)
    service = registry.get(model, "champion").metadata["feature_service"]
    fields = scoring_fields(spec, service)
    since = end - timedelta(days=REPLAY_DAYS)
    seed = int(time.time()) % 10_000  # another sample each run

    began = time.monotonic()
    quiet = replay_traffic(target.url, str(base), since, seed, PHASE_ROWS, fields, "undrifted")
    run_monitoring(model)
    before = newest_record(registry, model, 1, "monitoring", "monitoring.json")
    clock.step(
        f"undrifted traffic: {quiet.rows} rows (sample {seed}), monitoring {_state(before)}", began
    )
    if before and any(w["drift"] for w in before["windows"]):
        # its episode is open now: the drifted window would not be announced again for an hour
        flagged = [f["feature"] for w in before["windows"] for f in w["features"] if f["drifted"]]
        raise RuntimeError(
            f"monitoring flagged the undrifted window ({flagged or 'scores'}): a false alarm, "
            f"which its {DEMO_P_VALUE:.0%} level allows now and then; run `make demo` again "
            "(another sample)"
        )

    began = time.monotonic()
    drift_at = datetime.now(UTC)  # (a scheduled monitoring run may see the drift first)
    loud = replay_traffic(target.url, str(drifted), since, seed, PHASE_ROWS, fields, "drifted")
    copy_tables(drifted, source)  # the drifted world's data lands in the source
    run_monitoring(model)
    after = newest_record(registry, model, 1, "monitoring", "monitoring.json")
    clock.step(f"drifted traffic: {loud.rows} rows, monitoring {_state(after)}", began)

    began = time.monotonic()
    live = label_rows(drifted, spec, pd.Timestamp(since, tz="UTC"), seed + 1)[fields]
    live = live.iloc[:PHASE_ROWS].to_dict(orient="records")
    with Traffic(target.url, live) as traffic:  # live traffic for the canary
        finished = wait_retraining(drift_at, WAIT_RETRAINING_S)
    clock.step(f"retraining run {finished.name}: {finished.state.type.value}", began)

    versions = registry.versions(model)
    newest = versions[-1].version
    lineage = read_lineage(registry, model, newest) if newest > 1 else None
    latencies = quiet.latencies + loud.latencies + traffic.latencies  # answered (200) only
    summary = {
        "model": model,
        "versions": [v.version for v in versions],
        "aliases": registry.aliases(model),
        "validation": (lineage or {}).get("validation"),
        "rollout": ((lineage or {}).get("deployment") or {}).get("decision"),
        "served_requests": len(latencies),
        "canary_traffic": dict(traffic.statuses),
        "p50_ms": round(1000 * float(np.percentile(latencies, 50)), 1),
        "p99_ms": round(1000 * float(np.percentile(latencies, 99)), 1),
        "live_auc": {"undrifted": _auc(before), "drifted": _auc(after)},
        "retraining_run": f"{ui}/runs/flow-run/{finished.id}",
        "seconds": clock.steps,
    }
    _print_summary(summary, lineage_lines(lineage, ui) if lineage else [], ui, clock, out)
    if finished.state.type.value != "COMPLETED":
        raise RuntimeError(
            f"the retraining run ended {finished.state.type.value}: {ui}/runs/"
            f"flow-run/{finished.id}"
        )
    return summary


def _state(record: dict[str, Any] | None) -> str:
    if not record or not record["windows"]:
        return "no full window"
    drifted = sum(1 for w in record["windows"] if w["drift"])
    return f"{drifted} of {len(record['windows'])} windows drifted"


def _auc(record: dict[str, Any] | None) -> float | None:
    accuracy = (record or {}).get("accuracy") or []
    return round(float(accuracy[-1]["auc"]), 4) if accuracy else None


def _print_summary(
    s: dict[str, Any], lineage: list[str], ui: str, clock: Clock, out: Callable[[str], None]
) -> None:
    out("")
    out(f"== {s['model']}: versions {s['versions']}, aliases {s['aliases']}")
    validation = s["validation"] or {}
    out(
        f"   retrained version: gates {validation.get('decision')}"
        f"{' ' + str(validation['failed_gates']) if validation.get('failed_gates') else ''}, "
        f"rollout {s['rollout']}"
    )
    out(
        f"   served: {s['served_requests']} requests of one row through nginx, client-measured "
        f"p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms; during the rollout: "
        + ", ".join(f"{n} x {status}" for status, n in s["canary_traffic"].items())
    )
    auc = s["live_auc"]
    out(
        f"   live AUC of v1 (labels through the feedback endpoint): undrifted {auc['undrifted']}, "
        f"drifted {auc['drifted']}"
    )
    if lineage:
        out("== lineage of the newest version")
        for line in lineage:
            out("   " + line)
    out("== in the Prefect UI")
    out(f"   retraining run  {s['retraining_run']}")
    out(f"   flow runs       {ui}/runs")
    out(f"   artifacts       {ui}/artifacts")
    out(f"   automations     {ui}/automations")
    out(f"   deployments     {ui}/deployments")
    out(
        f"== demo took {time.monotonic() - clock.began:.0f} s; `make stop` stops the server, "
        "the worker and the served model"
    )
