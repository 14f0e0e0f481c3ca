"""The loop end to end on real parts: a `prefect server start`, a process pool, `prefect deploy
--all` (deployments, the monitoring schedule, the retraining automations), a worker, a champion
on the local Seldon target behind nginx, traffic from the generator's undrifted and
covariate-drifted modes. Asserted through Prefect's API and the registry.

The server is restarted between the drift and the retraining: the drift event is kept in the
server's database, but no trigger acted on it (its automation did not exist yet, as after a
restart that lost the event queue). The next monitoring run emits the unanswered episode again;
Prefect's events client may also re-send the first event (it re-sends what the server had not
confirmed when it reconnects). Either starts the one retraining of the episode."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import yaml
from prefect.deployments import run_deployment
from prefect.events import emit_event
from prefect.events.worker import EventsWorker
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.variables import Variable

from blocks import (
    DaskCluster,
    DataSource,
    FeatureRepo,
    ModelRegistry,
    MonitoringPolicy,
    RolloutPolicy,
    ServingTarget,
)
from docs import ui as ui_pages
from flows import FLOWS
from flows.data_prep import DataPrepParams, data_prep
from flows.deployment import DeploymentParams, deployment
from flows.generate_data import GenerateDataParams, generate_data
from flows.monitoring import MonitoringParams, monitoring
from flows.training import TrainingParams, training
from tasks.monitoring.lineage import lineage_lines, read_lineage
from tasks.monitoring.policy import MonitoringPolicy as Watch
from tasks.serving.local_target import LocalTarget
from tasks.serving.replay import Traffic, label_rows, replay
from tasks.serving.rollout import RolloutPolicy as Rollout
from tasks.specs.datasets import get_dataset
from tests.servers import (
    BIN,
    ROOT,
    Processes,
    free_port,
    prefect,
    prefect_on_postgres,
    wait_for,
)

pytestmark = pytest.mark.integration
NAME = "credit-loop"
ROWS = 200_000
END = date.today() - timedelta(days=1)
DRIFT_START = END - timedelta(days=400)
FIELDS = ["customer_id", "loan_amount", "term_months", "purpose", "missed_payments_12m"]
DRIFT = "mlops.model.drift-detected"


def _events(api: str, name: str) -> list[dict[str, Any]]:
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    body = {"filter": {"event": {"name": [name]}, "occurred": {"since": since}}, "limit": 50}
    answer = httpx.post(f"{api}/events/filter", json=body, timeout=10)
    answer.raise_for_status()
    return list(answer.json()["events"])


def _runs(api: str, deployment: str) -> list[dict[str, Any]]:
    flow, name = deployment.split("/")
    found = httpx.get(f"{api}/deployments/name/{flow}/{name}", timeout=10).json()
    body = {"deployments": {"id": {"any_": [found["id"]]}}, "sort": "START_TIME_ASC"}
    return list(httpx.post(f"{api}/flow_runs/filter", json=body, timeout=10).json())


def _send(url: str, apps: pd.DataFrame) -> None:
    replay(url, apps, FIELDS, batch=50)


def _applications(raw: Path, start: int, n: int, after_drift: bool = False) -> pd.DataFrame:
    since = pd.Timestamp(DRIFT_START, tz="UTC") if after_drift else None
    return label_rows(raw, get_dataset("credit_risk"), since).iloc[start : start + n]


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory, postgres) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("loop")
    # this process's events go through one cached worker whose client was made for the first
    # server it saw (another module's): drain it, so the next emit connects to this one
    EventsWorker.drain_all(timeout=10)
    server = prefect_on_postgres(postgres, root / "prefect-home")
    env = {**os.environ, "PREFECT_API_URL": server.api_url, "PREFECT_HOME": str(server.home)}
    procs = Processes(root)
    target = None
    try:
        target = _champion(root, server.api_url)
        yield {"root": root, "server": server, "env": env, "procs": procs, "target": target}
    finally:
        procs.stop_all()
        if target is not None:
            target.stop_all()
        EventsWorker.drain_all(timeout=10)
        server.stop()


async def _stored(database_url: str | None, runs: list[str]) -> dict[str, int]:
    import asyncpg

    assert database_url and database_url.startswith("postgresql+asyncpg://")
    conn = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        found = await conn.fetchval(
            "SELECT count(*) FROM flow_run WHERE id = ANY($1::uuid[])", runs
        )
        events = await conn.fetchval("SELECT count(*) FROM events WHERE event = $1", DRIFT)
    finally:
        await conn.close()
    return {"runs": int(found), "drift_events": int(events)}


def _champion(root: Path, api: str) -> LocalTarget:
    """Data up to yesterday, data_prep, training, v1 served as champion; the loop's blocks and
    its `mlops_loop` variable saved on the server."""
    with temporary_settings(updates={PREFECT_API_URL: api}):
        DaskCluster(processes=False, n_workers=1, threads_per_worker=2).save("loop-threads")
        FeatureRepo(
            repo_path=str(ROOT / "features"),
            registry_path=str(root / "feast" / "registry.db"),
            sqlite_path=str(root / "feast" / "online.db"),
        ).save("loop-feast")
        DataSource(uri=str(root / "raw")).save("loop-source")
        ModelRegistry(root_uri=str(root / "registry")).save("loop-registry")
        ServingTarget(
            state_dir=str(root / "serving"),
            port=free_port(),
            online_store=str(root / "feast" / "online.db"),
            drain_s=0.2,
        ).save("loop-serving")
        RolloutPolicy(policy=Rollout(window_requests=40, min_requests=20, canary_percent=30)).save(
            "loop-rollout"
        )
        MonitoringPolicy(
            policy=Watch(window_rows=300, min_rows=100, settle_s=0, reemit_after_s=0)
        ).save("loop-watch")
        loop_blocks = {
            "registry_block": "loop-registry",
            "target_block": "loop-serving",
            "feature_repo_block": "loop-feast",
            "dask_cluster_block": "loop-threads",
            "data_source_block": "loop-source",
            "rollout_policy_block": "loop-rollout",
            "monitoring_policy_block": "loop-watch",
        }  # the README's way: `prefect variable set mlops_loop '{...}' --overwrite`
        env = {**os.environ, "PREFECT_API_URL": api}
        prefect(env, "variable", "set", "mlops_loop", json.dumps(loop_blocks), "--overwrite")
        assert Variable.get("mlops_loop") == loop_blocks
        generate_data(
            GenerateDataParams(
                rows=ROWS,
                seed=3,
                start=END - timedelta(days=900),
                end=END,
                out_uri=str(root / "raw"),
                chunk_rows=100_000,
            )
        )
        out = str(root / "out")
        data_prep(
            DataPrepParams(
                data_source_block="loop-source",
                output_uri=out,
                dask_cluster_block="loop-threads",
                feature_repo_block="loop-feast",
            )
        )
        training(
            TrainingParams(
                model_name=NAME,
                data_uri=out,
                feature_repo_block="loop-feast",
                registry_block="loop-registry",
            )
        )
        ModelRegistry.load("loop-registry").registry().set_alias(NAME, "challenger", 1)
        served = deployment(
            DeploymentParams(
                model_name=NAME,
                target_block="loop-serving",
                policy_block="loop-rollout",
                registry_block="loop-registry",
            )
        )
        assert served.decision == "promoted"
        return LocalTarget(ServingTarget.load("loop-serving").local_settings(), NAME)


def _worker(loop: dict[str, Any]) -> None:
    """The pool's worker, started once per module."""
    if not loop.get("worker"):
        env = {**loop["env"], "PREFECT_WORKER_QUERY_SECONDS": "2"}
        args = [str(BIN / "prefect"), "worker", "start", "-p", "mlops-local"]
        loop["worker"] = loop["procs"].start("worker", args, env=env)


@pytest.mark.timeout(600)  # set-up, a restart, and a retraining on a worker
def test_drift_retrains_gates_and_rolls_out_on_its_own(loop) -> None:
    root, server, env = loop["root"], loop["server"], loop["env"]
    api, url = server.api_url, loop["target"].url
    with temporary_settings(updates={PREFECT_API_URL: api}):
        _send(url, _applications(root / "raw", 0, 600))
        quiet = monitoring(MonitoringParams(model_name=NAME)).models[0]
        assert (quiet.windows, quiet.events) == (2, [])
        assert _events(api, DRIFT) == []

        # the generator's covariate-drift mode: the same customers, larger loans from DRIFT_START
        drifted = root / "drifted"
        generate_data(
            GenerateDataParams(
                rows=ROWS,
                seed=3,
                start=END - timedelta(days=900),
                end=END,
                out_uri=str(drifted),
                chunk_rows=100_000,
                drift_start=DRIFT_START,
                covariate_drift=("loan_amount",),
            )
        )
        _send(url, _applications(drifted, 0, 600, after_drift=True))
        loud = monitoring(MonitoringParams(model_name=NAME)).models[0]
        assert loud.state == "drift", loud
        (first,) = wait_for(lambda: _events(api, DRIFT), 30, "the drift event")
        assert first["resource"]["prefect.resource.id"] == f"mlops.model.{NAME}"
        assert first["payload"]["version"] == 1 and "loan_amount" in first["payload"]["p_values"]

    # the server goes down before any trigger acted; the event outlives the restart
    server.stop()
    server.start(timeout=120)
    assert [e["id"] for e in _events(api, DRIFT)] == [first["id"]]

    # the new data is in the source: retraining's data_prep will see newer files
    for table in ("customers", "transactions", "applications"):
        for part in (drifted / table).iterdir():
            (root / "raw" / table / part.name).write_bytes(part.read_bytes())
    prefect(env, "work-pool", "create", "mlops-local", "--type", "process", "--overwrite")
    out = prefect(env, "--no-prompt", "deploy", "--all")
    assert "retraining/retraining" in out and "monitoring/monitoring" in out
    automations = prefect({**env, "COLUMNS": "250"}, "automation", "ls")
    for trigger in ("retrain-on-drift", "retrain-on-degraded-accuracy", "retrain-on-new-data"):
        assert trigger in automations
    monitoring_deployment = httpx.get(f"{api}/deployments/name/monitoring/monitoring").json()
    assert [s["active"] for s in monitoring_deployment["schedules"]] == [True]
    _worker(loop)

    rows = json.loads(
        _applications(drifted, 600, 400, after_drift=True)[FIELDS].to_json(orient="records")
    )
    with Traffic(url, rows) as traffic:  # live traffic for the canary
        with temporary_settings(updates={PREFECT_API_URL: api}):
            run = run_deployment(
                "monitoring/monitoring", parameters={"params": {"model_name": NAME}}, timeout=240
            )
            assert run.state is not None and run.state.is_completed(), run.state
        again = wait_for(  # the open episode, emitted once more (events are stored in batches)
            lambda: [e for e in _events(api, DRIFT) if e["id"] != first["id"]], 30, "re-emission"
        )
        assert again[0]["payload"]["emitted"] >= 2 and again[0]["payload"]["version"] == 1

        def retrained() -> dict[str, Any] | None:
            runs = _runs(api, "retraining/retraining")
            done = [r for r in runs if r["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED")]
            # (a run CANCELLED by the deployment's concurrency limit is not the one)
            return done[0] if done else None

        finished = wait_for(retrained, 420, "the retraining run", interval=2)
    assert finished["state"]["type"] == "COMPLETED", (
        finished["state"],
        loop["procs"].log("worker")[-4000:],
    )
    # the episode's first event (re-sent by its client after the restart, as Prefect's events
    # client re-sends what the server had not confirmed) or its re-emission started it; if both
    # reached the trigger (its debounce does not hold across the restart), the concurrency limit
    # cancelled the other run: one retraining either way
    assert finished["parameters"]["params"]["event_id"] in {first["id"]} | {e["id"] for e in again}
    others = [r for r in _runs(api, "retraining/retraining") if r["id"] != finished["id"]]
    assert all(r["state"]["type"] == "CANCELLED" for r in others), [r["state"] for r in others]
    assert traffic.statuses[200] > 0 and set(traffic.statuses) == {200}, traffic.statuses

    with temporary_settings(updates={PREFECT_API_URL: api}):
        registry = ModelRegistry.load("loop-registry").registry()
    assert [v.version for v in registry.versions(NAME)] == [1, 2]  # one retraining, one version
    v2 = registry.get(NAME, 2)
    cause = v2.metadata["cause"]
    assert (
        cause["event"] == DRIFT
        and cause["event_id"] == finished["parameters"]["params"]["event_id"]
    )
    assert cause["retraining_run"] == finished["id"]
    lineage = read_lineage(registry, NAME, 2)
    assert lineage is not None and lineage["runs"]["data-prep"]  # the source had new files
    assert lineage["validation"]["decision"] == "challenger"
    assert lineage["deployment"]["decision"] in ("promoted", "rolled-back")
    (stamp,) = registry.records(NAME, 2, "rollout")
    rollout = json.loads(registry.read_record(NAME, 2, "rollout", stamp, "rollout.json"))
    assert rollout["decision"] == lineage["deployment"]["decision"] and rollout.get("reason")
    for kind in ("retraining", "data-prep", "training", "validation", "deployment"):
        run = httpx.get(f"{api}/flow_runs/{lineage['runs'][kind]}").json()
        assert run["state"]["type"] == "COMPLETED", (kind, run["state"])
    text = "\n".join(lineage_lines(lineage, server.ui_url))
    assert f"/runs/flow-run/{finished['id']}" in text and DRIFT in text
    # the loop ran on PostgreSQL: its runs and the drift event are rows of the server's database
    stored = asyncio.run(_stored(server.database_url, list(lineage["runs"].values())))
    assert stored == {"runs": len(lineage["runs"]), "drift_events": stored["drift_events"]}
    assert stored["drift_events"] >= 1
    # and the champion's alias history says who moved it, and why
    moves = registry.alias_history(NAME, "champion")
    assert moves[-1].version == registry.aliases(NAME)["champion"]
    assert "flow run" in moves[-1].by and moves[-1].reason

    cli = subprocess.run(
        [str(BIN / "mlops"), "models", NAME, "2", "--lineage", "--registry-block", "loop-registry"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 0 and "gates: challenger" in cli.stdout, cli.stdout + cli.stderr


def test_one_episode_one_retraining_and_unknown_models_fail_fast(loop) -> None:
    api = loop["server"].api_url
    before = len(_runs(api, "retraining/retraining"))
    with temporary_settings(updates={PREFECT_API_URL: api}):
        for _ in range(5):
            emit_event(
                event=DRIFT,
                resource={"prefect.resource.id": "mlops.model.alpha"},
                payload={"version": 1},
            )
        emit_event(
            event=DRIFT,
            resource={"prefect.resource.id": "mlops.model.beta"},
            payload={"version": 1},
        )

    def created() -> list[dict[str, Any]] | None:
        runs = _runs(api, "retraining/retraining")[before:]
        return runs if len(runs) >= 2 else None

    runs = wait_for(created, 60, "the two retraining runs")
    time.sleep(5)  # would a third one (a second for alpha) appear?
    runs = _runs(api, "retraining/retraining")[before:]
    by_model = Counter(r["parameters"]["params"]["resource_id"] for r in runs)
    assert by_model == {"mlops.model.alpha": 1, "mlops.model.beta": 1}

    def ended() -> list[dict[str, Any]] | None:
        now = [httpx.get(f"{api}/flow_runs/{r['id']}").json() for r in runs]
        return (
            now
            if all(r["state"]["type"] in ("FAILED", "CANCELLED", "CRASHED") for r in now)
            else None
        )

    for run in wait_for(ended, 180, "both runs to end", interval=2):
        if run["state"]["type"] == "FAILED":  # CANCELLED: the other one held the slot
            model = run["parameters"]["params"]["resource_id"].rsplit(".", 1)[-1]
            assert f"unknown model '{model}'" in run["state"]["message"], run["state"]


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.mark.timeout(600)  # pip, deploy --all, and a retraining on the worker
def test_the_deploy_workflow_deploys_and_a_pipeline_update_retrains(loop) -> None:
    """.github/workflows/deploy.yml's own `run:` steps, against this server (where the pool and
    the deployments exist already: they are created or updated), then the retraining its
    `mlops.pipeline.updated` events start on the worker."""
    api, url = loop["server"].api_url, loop["target"].url
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "deploy.yml").read_text())
    assert workflow[True]["push"]["branches"] == ["main"]  # YAML 1.1 reads `on:` as true
    (job,) = workflow["jobs"].values()
    steps = [step for step in job["steps"] if "run" in step]
    assert [s["name"] for s in steps] == [
        "Install the pipelines",
        "Create or update the work pool",
        "Deploy every pipeline",
        "Announce the changed pipelines",
    ]
    head, first = _git("rev-parse", "HEAD"), _git("rev-list", "--max-parents=0", "HEAD")
    given = {  # what the secrets and the push event give in GitHub Actions
        "PREFECT_API_URL": api,
        "PREFECT_API_KEY": "",
        "BEFORE": first,  # the first commit: every pipeline changed since
        "COMMIT": head,
    }
    env = {k: str(v) for k, v in job["env"].items() if "${{" not in str(v)}
    assert set(job["env"]) == set(env) | set(given)
    env = {
        **os.environ,
        **env,
        **given,
        "PREFECT_HOME": str(loop["server"].home),
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
    }
    # what the steps must make: nothing of it is left from the earlier tests
    for kind in ("deployments", "automations"):
        for found in httpx.post(f"{api}/{kind}/filter", json={}, timeout=10).json():
            httpx.delete(f"{api}/{kind}/{found['id']}", timeout=10).raise_for_status()
    _worker(loop)
    for step in steps:
        assert "${{" not in step["run"], step["name"]  # runnable outside Actions
        done = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", step["run"]],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=400,
        )
        assert done.returncode == 0, (step["name"], done.stdout[-3000:], done.stderr[-3000:])
        if step["name"] == "Announce the changed pipelines":
            announced = done.stdout
    for name in FLOWS:
        assert f"mlops.pipeline.updated {name} at {head[:12]}" in announced, announced

    deployments = httpx.post(f"{api}/deployments/filter", json={}, timeout=10).json()
    assert {d["name"] for d in deployments} >= set(FLOWS)
    (monitoring_deployment,) = [d for d in deployments if d["name"] == "monitoring"]
    assert [s["active"] for s in monitoring_deployment["schedules"]] == [True]
    automations = httpx.post(f"{api}/automations/filter", json={}, timeout=10).json()
    triggers = [
        t["name"]
        for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
        for t in d.get("triggers", [])
    ]
    assert "retrain-on-pipeline-update" in triggers
    assert {a["name"] for a in automations} >= set(triggers)

    def retrained() -> dict[str, Any] | None:
        runs = [
            r
            for r in _runs(api, "retraining/retraining")
            if r["parameters"]["params"].get("event_name") == "mlops.pipeline.updated"
        ]
        done = [r for r in runs if r["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED")]
        return done[0] if done else None

    rows = _applications(loop["root"] / "raw", 2000, 400)[FIELDS].to_dict(orient="records")
    with Traffic(url, rows):  # in case the new version is canaried
        finished = wait_for(retrained, 480, "the pipeline-updated retraining", interval=2)
    # one push, one event per changed pipeline, one retraining (the trigger's for_each on the
    # events' commit label); the open drift episode may start others (monitoring's schedule)
    updated = [
        r["id"]
        for r in _runs(api, "retraining/retraining")
        if r["parameters"]["params"].get("event_name") == "mlops.pipeline.updated"
    ]
    assert updated == [finished["id"]]
    params = finished["parameters"]["params"]
    assert params["event_name"] == "mlops.pipeline.updated", params
    assert params["payload"]["commit"] == head
    assert finished["state"]["type"] == "COMPLETED", (
        finished["state"],
        loop["procs"].log("worker")[-4000:],
    )
    assert finished["infrastructure_pid"], finished  # run by the worker, in its own process
    with temporary_settings(updates={PREFECT_API_URL: api}):
        registry = ModelRegistry.load("loop-registry").registry()
    newest = registry.versions(NAME)[-1]
    assert newest.metadata["cause"]["event"] == "mlops.pipeline.updated"
    assert newest.metadata["cause"]["why"] == f"pipeline updated at {head}"
    lineage = read_lineage(registry, NAME, newest.version)
    assert lineage is not None and lineage["runs"]["data-prep"]  # new data_prep code: rebuilt


SHOTS = ROOT / "test-output" / "ui"  # screenshots of what the checks saw (git-ignored)


@pytest.mark.timeout(300)
def test_the_prefect_ui_in_a_browser(loop) -> None:
    """Headless Chromium on the loop's server: deployments, the validation evidence with its
    plots as images, the automations, and the training deployment's Run form."""
    api, ui = loop["server"].api_url, loop["server"].ui_url
    with temporary_settings(updates={PREFECT_API_URL: api}):
        registry = ModelRegistry.load("loop-registry").registry()
    lineage = read_lineage(registry, NAME, 2)
    assert lineage is not None, "the drift test's retraining made v2"
    validation_run = lineage["runs"]["validation"]
    evidence = [
        a for a in ui_pages.run_artifacts(api, validation_run) if a["key"].startswith("validation-")
    ]
    (markdown,) = [
        a for a in evidence if a["type"] == "markdown" and "evidence" in a["description"]
    ]
    triggers = [
        t["name"]
        for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
        for t in d.get("triggers", [])
    ]
    training = ui_pages.api_json(api, "deployments/name/training/training")
    with ui_pages.browser() as driver:
        ui_pages.open_page(driver, f"{ui}/deployments", list(FLOWS), SHOTS / "deployments.png")
        page = ui_pages.artifact_page(
            driver, ui, markdown["id"], ["Gates", "Metrics"], SHOTS / "validation-evidence.png"
        )
        ui_pages.open_page(driver, f"{ui}/automations", triggers, SHOTS / "automations.png")
        form = ui_pages.run_form(driver, ui, training["id"], SHOTS / "training-run-form.png")
    assert page.tables >= 2, page.text[:2000]  # the gate and metric tables, rendered
    plots = [i for i in page.images if i["src"].startswith("data:image/png")]
    assert plots and all(i["complete"] and i["width"] > 0 for i in plots), page.images
    assert not [link for link in page.links if link.startswith("file:")], page.links
    # typed, described inputs; choices as drop-downs
    for label in ("Trainer", "Num Boost Round", "Calibration", "Data-parallel workers."):
        assert label in form["text"], form["text"][:3000]
    assert ["lightgbm", "torch"] in form["selects"], form["selects"]
    assert ["platt", "isotonic", "none"] in form["selects"], form["selects"]
