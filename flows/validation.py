"""validation: candidate vs champion on one time-later test set -> gates -> challenger or not."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any, Literal

import pandas as pd
from prefect import flow, get_run_logger, pause_flow_run, task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import FlowPauseTimeout
from prefect.input import RunInput
from pydantic import BaseModel, ConfigDict, Field

from blocks import FeatureRepo, ModelRegistry, ValidationPolicy, load_or_default, resolve_dataset
from tasks.specs.dataset_spec import DatasetSpec
from tasks.specs.datasets import default_model
from tasks.validation.metrics import (
    InvarianceResult,
    MonotonicResult,
    SegmentMetrics,
    invariance_check,
    metrics,
    monotonic_check,
    segment_masks,
    segment_metrics,
)
from tasks.validation.explain import ExplainOptions, Explanation, explain_models, importance_moves
from tasks.feature_store.store import fingerprint, open_store
from tasks.validation.gates import (
    DataEvidence,
    GatePolicy,
    GateResult,
    behaviour_gates,
    data_gates,
    failed,
    metric_gates,
    segment_gates,
)
from tasks.validation.holdout import HoldoutError, holdout, read_labels, trained_to
from tasks.registry.loading import REFERENCE, LoadedModel, load_model
from tasks.registry.store import Registry, RegistryError
from tasks.validation.report import publish_decision, publish_evidence

Decision = Literal["challenger", "rejected"]


class ValidationParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_name: str | None = Field(default=None, description="Default: the demo's model.")
    candidate: int | None = Field(default=None, ge=1, description="Default: the newest version.")
    labels_uri: str | None = Field(
        default=None, description="Labelled entity rows; default data_prep's labels."
    )
    test_from: datetime | None = Field(
        default=None, description="Default: after both models' training data."
    )
    policy_block: str | None = Field(default=None, description="A ValidationPolicy block.")
    explain: ExplainOptions = Field(default_factory=ExplainOptions)
    seed: int = Field(default=0, ge=0)
    data_uri: str | None = Field(default=None, description="data_prep's output; data/<dataset>.")
    feature_repo_block: str | None = None
    registry_block: str | None = None


class Approval(RunInput):
    """What a reviewer answers in the Prefect UI."""

    approve: bool = Field(description="Make this candidate the challenger?")
    reviewer: str = Field(default="", description="Who decides.")
    comment: str = ""


class ValidationResult(BaseModel):
    model: str
    version: int
    champion: int | None
    decision: Decision
    failed_gates: list[str]
    metrics: dict[str, float]
    record: str  # the registry record holding the evidence
    approval: dict[str, Any] | None = None


class Evaluation(BaseModel):
    version: int
    metrics: dict[str, float]
    segments: list[SegmentMetrics]


@task(name="load-models", cache_policy=NO_CACHE)
def load_models(
    registry: Registry, name: str, ref: int | None
) -> tuple[LoadedModel, LoadedModel | None]:
    versions = registry.versions(name)
    if not versions:
        raise RegistryError(f"model '{name}' has no versions; known: {registry.models()}")
    candidate = load_model(registry, name, ref or versions[-1].version)
    champion_ref = registry.aliases(name).get("champion")
    if champion_ref is None or champion_ref == candidate.version:
        return candidate, None
    return candidate, load_model(registry, name, champion_ref)


@task(name="load-test-set", cache_policy=NO_CACHE)
def load_test_set(
    params: ValidationParams, spec: DatasetSpec, labels: pd.DataFrame, models: list[LoadedModel]
) -> tuple[pd.DataFrame, DataEvidence]:
    store = open_store(
        load_or_default(FeatureRepo, params.feature_repo_block, FeatureRepo()).settings()
    )
    seen = max(trained_to(m.metadata) for m in models)
    after = pd.Timestamp(params.test_from, tz="UTC") if params.test_from else seen
    services = list(dict.fromkeys(m.metadata["feature_service"] for m in models))
    frame = holdout(store, spec, labels, services, after)
    candidate = models[0]
    nulls = frame[candidate.features].isna().mean()
    evidence = DataEvidence(
        test_rows=len(frame),
        positives=int(frame[spec.label.column].sum()),
        worst_null_feature=str(nulls.idxmax()),
        worst_null_rate=float(nulls.max()),
        fingerprint_trained=candidate.metadata["feature_fingerprint"],
        fingerprint_now=fingerprint(store, candidate.metadata["feature_service"]),
        # rounded outwards to the microseconds a datetime holds: the order is kept
        test_from=frame[spec.timestamp_field].min().ceil("us").to_pydatetime(),
        trained_to=seen.floor("us").to_pydatetime(),
    )
    return frame, evidence


@task(name="evaluate", cache_policy=NO_CACHE, task_run_name="evaluate-v{model.version}")
def evaluate(
    model: LoadedModel, test: pd.DataFrame, spec: DatasetSpec, min_segment_rows: int
) -> Evaluation:
    labels = test[spec.label.column].to_numpy()
    scores = model.predict(test)
    masks = {
        k: m
        for name, seg in spec.validation.segments.items()
        for k, m in segment_masks(test, name, seg).items()
    }
    return Evaluation(
        version=model.version,
        metrics=metrics(labels, scores),
        segments=segment_metrics(masks, labels, scores, min_segment_rows),
    )


@task(name="behaviour-checks", cache_policy=NO_CACHE)
def behaviour(
    model: LoadedModel, test: pd.DataFrame, spec: DatasetSpec, rows: int, seed: int
) -> tuple[list[MonotonicResult], list[InvarianceResult]]:
    sample = test.sample(min(rows, len(test)), random_state=seed)
    v = spec.validation
    return (
        [monotonic_check(model.predict, sample, f, d) for f, d in v.monotonic.items()],
        [invariance_check(model.predict, sample, c, seed) for c in v.invariance],
    )


@task(name="explain", cache_policy=NO_CACHE)
def explain(
    params: ValidationParams,
    registry: Registry,
    spec: DatasetSpec,
    test: pd.DataFrame,
    candidate: LoadedModel,
    champion: LoadedModel | None,
) -> Explanation:
    started = time.perf_counter()
    named = {f"candidate v{candidate.version}": candidate}
    if champion is not None:
        named[f"champion v{champion.version}"] = champion
    reference = pd.read_parquet(registry.file_uri(candidate.name, candidate.version, REFERENCE))
    if spec.label.column not in reference.columns:
        raise HoldoutError(
            f"model '{candidate.name}' v{candidate.version}: {REFERENCE} has no label column "
            f"'{spec.label.column}' (registered by an older training flow; train it again)"
        )
    train = reference.sample(min(params.explain.ebm_rows, len(reference)), random_state=params.seed)
    return explain_models(
        named,
        train,
        test,
        candidate.metadata.get("categorical", []),
        spec.label.column,
        params.explain,
        params.seed,
        started,
    )


def ask_approval(policy: GatePolicy) -> Approval | None:
    """Pause for a reviewer's answer; None when the timeout passes first."""
    try:
        return pause_flow_run(
            wait_for_input=Approval,
            timeout=policy.approval_timeout_s,
            poll_interval=min(5, policy.approval_timeout_s),
        )
    except FlowPauseTimeout:
        return None


@flow(name="validation", log_prints=True)
def validation(params: ValidationParams = ValidationParams()) -> ValidationResult:  # noqa: B008
    """Gate a candidate against the champion; make it `challenger` or reject it, with evidence."""
    logger = get_run_logger()
    registry = load_or_default(ModelRegistry, params.registry_block, ModelRegistry()).registry()
    policy = load_or_default(ValidationPolicy, params.policy_block, ValidationPolicy()).policy
    name = params.model_name or default_model()
    candidate, champion = load_models(registry, name, params.candidate)
    models = [candidate] if champion is None else [candidate, champion]
    spec = resolve_dataset(candidate.metadata["dataset"])
    uri = params.labels_uri or f"{params.data_uri or f'data/{spec.name}'}/features/labels"
    labels = read_labels(uri, spec)
    test, data = load_test_set(params, spec, labels, models)

    evaluations = [evaluate(m, test, spec, policy.min_segment_rows) for m in models]
    new, old = evaluations[0], (evaluations[1] if champion else None)
    monotonic, invariance = behaviour(candidate, test, spec, policy.behaviour.rows, params.seed)
    gates: list[GateResult] = [
        *data_gates(data, policy.data),
        *metric_gates(new.metrics, old.metrics if old else None, policy),
        *segment_gates(new.segments, old.segments if old else None, policy),
        *behaviour_gates(monotonic, invariance, policy.behaviour),
    ]
    explanation = explain(params, registry, spec, test, candidate, champion)
    ranked = list(explanation.importances.values())  # candidate first, then the champion
    moves = importance_moves(ranked[0], ranked[1]) if len(ranked) == 2 else []
    evidence = {
        "model": name,
        "candidate": candidate.version,
        "champion": champion.version if champion else None,
        "policy": policy.model_dump(mode="json"),
        "data": data.model_dump(mode="json"),
        "metrics": {e.version: e.metrics for e in evaluations},
        "segments": {e.version: [s.model_dump() for s in e.segments] for e in evaluations},
        "behaviour": {
            "monotonic": [m.model_dump() for m in monotonic],
            "invariance": [i.model_dump() for i in invariance],
        },
        "gates": [g.model_dump() for g in gates],
        "importance_moves": [m.model_dump() for m in moves],
        "glass_box": explanation.glass_box.model_dump(),
        "explain_seconds": explanation.seconds,
        "local_explanations": [e.model_dump() for e in explanation.local],
        "partial_dependence": explanation.dependence,
    }
    files = {
        "evidence.json": json.dumps(evidence, indent=2, default=str).encode(),
        "importances.json": json.dumps(explanation.importances, indent=2).encode(),
        **explanation.plots,
    }
    stamp = registry.record(name, candidate.version, "validation", files)
    failing = [g.gate for g in failed(gates)]
    publish_evidence(registry, evidence, stamp, sorted(explanation.plots), policy.require_approval)

    approval = None
    decision: Decision = "rejected" if failing else "challenger"
    if not failing and policy.require_approval:
        answer = ask_approval(policy)
        approval = answer.model_dump() if answer else {"approve": False, "timed_out": True}
        if not (answer and answer.approve):
            decision = "rejected"
            failing = ["approval:timeout" if answer is None else "approval:rejected"]
    outcome = {
        "decision": decision,
        "failed_gates": failing,
        "evidence": stamp,
        "approval": approval,
        "decided_at": pd.Timestamp.now(tz="UTC").isoformat(),
    }
    registry.record(
        name, candidate.version, "decision", {"decision.json": json.dumps(outcome).encode()}
    )
    publish_decision(name, candidate.version, outcome)
    if decision == "challenger":
        registry.set_alias(name, "challenger", candidate.version)
        logger.info("%s v%s is now the challenger", name, candidate.version)
    else:
        logger.warning("%s v%s rejected; failed gates: %s", name, candidate.version, failing)
    return ValidationResult(
        model=name,
        version=candidate.version,
        champion=champion.version if champion else None,
        decision=decision,
        failed_gates=failing,
        metrics=new.metrics,
        record=stamp,
        approval=approval,
    )
