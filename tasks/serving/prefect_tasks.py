"""The serving stage's Prefect tasks: thin wrappers adding names, retries, timeouts and
artifacts to the plain functions of tasks/serving/."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect.transactions import Transaction, get_transaction

from deployments.predictor import FEATURES, LoadedModel
from tasks.artifacts import artifact_key, markdown_table
from tasks.data.prefect_tasks import on_cluster
from tasks.feature_store.store import StoreSettings
from tasks.registry.loading import load_model
from tasks.registry.store import Registry
from tasks.retries import retry_transient
from tasks.serving.batch import BatchScoringResult, batch_score
from tasks.serving.local_target import LocalTarget, Predictor, Routing, http_json
from tasks.serving.report import rollout_markdown
from tasks.serving.rollout import (
    RolloutPolicy,
    analyse,
    holdout_rows,
    ingress_lines,
    labels_by_request,
    readiness,
    side_stats,
    smoke_test,
    wait_for_window,
    window_records,
)
from tasks.specs.dataset_spec import DatasetSpec

# --- batch scoring (model as data) ----------------------------------------------------------
# Loading reads the registry and scoring reads the offline store: a transient I/O failure is
# worth another try, and a second scoring try is safe (the output is replaced whole or not at
# all). Bad entity rows or a changed feature set fail the same way every time.

BATCH_RETRY_IO: dict[str, Any] = {
    "retries": 1,
    "retry_delay_seconds": 30,
    "retry_condition_fn": retry_transient,
}


@task(name="load-scoring-model", cache_policy=NO_CACHE, **BATCH_RETRY_IO)
def load_scoring_model(registry: Registry, name: str, ref: int | str) -> LoadedModel:
    """A version by number or alias (`champion`), calibrated as it was registered."""
    return load_model(registry, name, ref)


@task(
    name="batch-score",
    cache_policy=NO_CACHE,
    timeout_seconds=6 * 3_600,
    task_run_name="batch-score-v{model.version}",
    **BATCH_RETRY_IO,
)
def batch_score_task(
    model: LoadedModel,
    entities_uri: str,
    output_uri: str,
    spec: DatasetSpec,
    settings: StoreSettings,
    timestamp: str | None,
    partitions: int | None,
) -> BatchScoringResult:
    with on_cluster():
        return batch_score(model, entities_uri, output_uri, spec, settings, timestamp, partitions)


@task(name="report-batch-scoring", cache_policy=NO_CACHE)
def report_batch_scoring(result: BatchScoringResult) -> None:
    rows: list[dict[str, Any]] = [
        {"what": "model", "value": f"{result.model} v{result.version}"},
        {"what": "feature fingerprint", "value": result.feature_fingerprint},
        {"what": "rows scored", "value": result.rows},
        {"what": "partitions", "value": result.partitions},
        {"what": "rows/s", "value": f"{result.rows / max(result.seconds, 1e-9):,.0f}"},
        {"what": "output", "value": result.output_uri},
        *({"what": f"snapshot of {k}", "value": v} for k, v in result.snapshots.items()),
    ]
    create_markdown_artifact(
        key=artifact_key("batch-scoring", result.model),
        markdown="\n".join(
            [f"# Batch scoring: {result.model} v{result.version}", "", *markdown_table(rows)]
        ),
        description=f"Batch scores of {result.model} v{result.version}",
    )


# --- end of batch scoring -------------------------------------------------------------------


# --- deployment (model as code) -------------------------------------------------------------
# Starting, routing and alias moves each register a rollback hook: inside the deployment
# flow's transaction, a failure, a refusal or a cancel undoes them in reverse order (the
# challenger stopped, the previous routing and aliases restored). Nothing here is retried: a
# second start or route after a failure would act on a state the first one left.


def _stage(name: str, value: Any) -> None:
    txn = get_transaction()
    if txn is not None:
        txn.set(name, value)


@task(name="start-predictor", cache_policy=NO_CACHE, task_run_name="start-{role}-v{version}")
def start_predictor(target: LocalTarget, role: str, version: int, model_dir: str) -> Predictor:
    """A healthy predictor process for a version (stopped again if the rollout is undone)."""
    predictor = target.start(role, version, model_dir)
    _stage("started", (target, predictor))
    return predictor


@start_predictor.on_rollback
def _stop_started(txn: Transaction) -> None:
    target, predictor = txn.get("started")
    target.stop(predictor, drain_s=0)


@task(name="check-predictor", cache_policy=NO_CACHE, task_run_name="check-v{version}")
def check_predictor(
    predictor: Predictor, version: int, model_dir: str, policy: RolloutPolicy
) -> dict[str, Any]:
    """Readiness (health and one real prediction), then the smoke test on held-out rows."""
    features = json.loads((Path(model_dir) / FEATURES).read_text())["features"]
    holdout = holdout_rows(model_dir, policy.smoke_rows)
    ready = readiness(predictor.url, holdout, features, http_json)
    smoke = smoke_test(predictor.url, holdout, features, http_json, policy.smoke_tolerance)
    return {"readiness": ready, "smoke": smoke}


@task(name="route-traffic", cache_policy=NO_CACHE)
def route_traffic(target: LocalTarget, routing: Routing) -> Routing | None:
    """Send traffic as `routing` says; returns the routing it replaced (restored on rollback)."""
    before = target.routing()
    target.route(routing)
    _stage("routed", (target, before))
    return before


@route_traffic.on_rollback
def _restore_routing(txn: Transaction) -> None:
    target, before = txn.get("routed")
    if before is not None:
        target.route(before)


@task(name="move-alias", cache_policy=NO_CACHE, task_run_name="{alias}-to-v{version}")
def move_alias(
    registry: Registry,
    name: str,
    alias: str,
    version: int,
    expected: int | None,
    by: str,
    reason: str,
) -> int | None:
    """Point `alias` at `version` if it still points at `expected` (AliasConflict otherwise);
    returns where it pointed (restored on rollback, if nobody moved it since)."""
    registry.set_alias(name, alias, version, expected=expected, by=by, reason=reason)
    _stage("alias", (registry, name, alias, expected, version, by))
    return expected


@move_alias.on_rollback
def _restore_alias(txn: Transaction) -> None:
    registry, name, alias, before, version, by = txn.get("alias")
    registry.set_alias(
        name, alias, before, expected=version, by=by, reason="rolled back with its transaction"
    )


@task(name="observe-window", cache_policy=NO_CACHE, timeout_seconds=3_600)
def observe_window(
    target: LocalTarget,
    policy: RolloutPolicy,
    challenger: Predictor,
    champion: Predictor,
    since: str,
    since_epoch: float,
) -> tuple[list[str], dict[str, Any]]:
    """Wait for the window (challenger predictions, or the timeout), then analyse it."""
    alive = partial(target.is_alive, challenger)
    seen = wait_for_window(target.log_dir, challenger.role, since, policy, alive)
    get_run_logger().info("window: %d challenger predictions", seen)
    records = window_records(target.log_dir, since)
    labels = labels_by_request(target.log_dir, since)
    ingress = ingress_lines(target.access_log, since_epoch)
    sides = [
        side_stats(records, labels, ingress, p.version, p.role, p.address)
        for p in (challenger, champion)
    ]
    return analyse(policy, sides[0], sides[1], target.is_alive(challenger))


@task(name="record-rollout", cache_policy=NO_CACHE)
def record_rollout(registry: Registry, name: str, version: int, outcome: dict[str, Any]) -> str:
    """Keep the decision and its evidence beside the version, publish it, emit its event."""
    stamp = registry.record(
        name, version, "rollout", {"rollout.json": json.dumps(outcome, indent=2).encode()}
    )
    create_markdown_artifact(
        key=artifact_key("rollout", name),
        markdown=rollout_markdown(outcome),
        description=f"Rollout of {name} v{version}: {outcome['decision']}",
    )
    event = {"promoted": "mlops.model.promoted", "rolled-back": "mlops.model.rolled-back"}
    if outcome["decision"] in event:
        emit_event(
            event=event[outcome["decision"]],
            resource={"prefect.resource.id": f"mlops.model.{name}"},
            related=[
                {
                    "prefect.resource.id": f"mlops.model.{name}.version.{version}",
                    "prefect.resource.role": "model-version",
                },
                {
                    "prefect.resource.id": f"mlops.record.{name}.{version}.rollout.{stamp}",
                    "prefect.resource.role": "record",
                },
            ],
            payload={
                "version": version,
                "champion_before": outcome.get("champion_before"),
                "reason": outcome.get("reason") or "; ".join(outcome.get("reasons", [])),
                "record": stamp,
            },
        )
    return stamp


# --- end of deployment ----------------------------------------------------------------------
