"""The validation stage's Prefect tasks: thin wrappers adding names, retries and artifacts.

Loading the models and the test set reads the registry, Feast's registry and the offline store:
a transient I/O failure is worth another try. Evaluation, behaviour checks and explanations are
computations that fail the same way twice; recording is not retried, since a second try would
write a second record.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
from prefect import task
from prefect.artifacts import (
    create_markdown_artifact,
    create_table_artifact,
)
from prefect.cache_policies import NO_CACHE

from deployments.predictor import LoadedModel
from tasks.artifacts import artifact_key
from tasks.feature_store.store import StoreSettings
from tasks.registry.loading import load_model
from tasks.registry.store import Registry, RegistryError
from tasks.retries import retry_transient
from tasks.specs.dataset_spec import DatasetSpec
from tasks.validation.behaviour import InvarianceResult, MonotonicResult, behaviour_checks
from tasks.validation.evidence import (
    decision_markdown,
    evidence_files,
    evidence_markdown,
    gate_rows,
    metric_rows,
)
from tasks.validation.explain import ExplainOptions, Explanation, explain_versions
from tasks.validation.gates import DataEvidence
from tasks.validation.holdout import test_set
from tasks.validation.metrics import Evaluation, evaluate_model

RETRY_IO: dict[str, Any] = {
    "retries": 2,
    "retry_delay_seconds": [5, 30],
    "retry_condition_fn": retry_transient,
}


@task(name="load-models", cache_policy=NO_CACHE, **RETRY_IO)
def load_models(
    registry: Registry, name: str, ref: int | None
) -> tuple[LoadedModel, LoadedModel | None]:
    """The candidate (default: the newest version) and the champion, unless they are one."""
    versions = registry.versions(name)
    if not versions:
        raise RegistryError(f"model '{name}' has no versions; known: {registry.models()}")
    candidate = load_model(registry, name, ref or versions[-1].version)
    champion_ref = registry.aliases(name).get("champion")
    if champion_ref is None or champion_ref == candidate.version:
        return candidate, None
    return candidate, load_model(registry, name, champion_ref)


@task(name="load-test-set", cache_policy=NO_CACHE, timeout_seconds=2 * 3_600, **RETRY_IO)
def load_test_set(
    spec: DatasetSpec,
    data_uri: str,
    labels_uri: str | None,
    models: list[LoadedModel],
    settings: StoreSettings,
    test_from: pd.Timestamp | None,
) -> tuple[pd.DataFrame, DataEvidence]:
    return test_set(spec, data_uri, labels_uri, models, settings, test_from)


@task(name="evaluate", cache_policy=NO_CACHE, task_run_name="evaluate-v{model.version}")
def evaluate(model: LoadedModel, test: pd.DataFrame, spec: DatasetSpec) -> Evaluation:
    return evaluate_model(model, test, spec)


@task(name="behaviour-checks", cache_policy=NO_CACHE)
def behaviour(
    model: LoadedModel, test: pd.DataFrame, spec: DatasetSpec, rows: int, seed: int
) -> tuple[list[MonotonicResult], list[InvarianceResult]]:
    return behaviour_checks(model, test, spec, rows, seed)


@task(name="explain", cache_policy=NO_CACHE, timeout_seconds=3_600)
def explain(
    registry: Registry,
    spec: DatasetSpec,
    test: pd.DataFrame,
    candidate: LoadedModel,
    champion: LoadedModel | None,
    options: ExplainOptions,
    seed: int,
) -> Explanation:
    return explain_versions(registry, spec, test, candidate, champion, options, seed)


@task(name="record-evidence", cache_policy=NO_CACHE)
def record_evidence(
    registry: Registry, evidence: dict[str, Any], explanation: Explanation, pending_approval: bool
) -> str:
    """Keep the evidence beside the version, then publish it: markdown summary with the plots
    embedded (the UI shows them; a file:// link would not open), gate and metric tables.
    Returns the record's stamp."""
    name, version = evidence["model"], evidence["candidate"]
    stamp = registry.record(name, version, "validation", evidence_files(evidence, explanation))
    where = registry.record_uri(name, version, "validation", stamp, "")
    create_markdown_artifact(
        key=artifact_key("validation", name),
        markdown=evidence_markdown(evidence, explanation.plots, where, pending_approval),
        description=f"Validation evidence for {name} v{version}",
    )
    create_table_artifact(
        key=artifact_key("validation-gates", name),
        table=gate_rows(evidence),
        description=f"Gate results for {name} v{version}",
    )
    create_table_artifact(
        key=artifact_key("validation-metrics", name),
        table=metric_rows(evidence),
        description=f"Candidate and champion metrics for {name} v{version}",
    )
    return stamp


@task(name="record-decision", cache_policy=NO_CACHE)
def record_decision(registry: Registry, name: str, version: int, outcome: dict[str, Any]) -> None:
    registry.record(name, version, "decision", {"decision.json": json.dumps(outcome).encode()})
    create_markdown_artifact(
        key=artifact_key("validation-decision", name),
        markdown=decision_markdown(name, version, outcome),
        description=f"Validation decision for {name} v{version}",
    )
