"""validation: candidate vs champion on one time-later test set -> gates -> challenger or not."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import pandas as pd
from prefect import flow, get_run_logger
from prefect.client.schemas.objects import FlowRun
from prefect.runtime import flow_run
from pydantic import BaseModel, ConfigDict, Field

from blocks import FeatureRepo, ModelRegistry, ValidationPolicy, load_or_default, resolve_dataset
from flows.approval import approval_fired, ask_approval, asked_before, current_run
from tasks.registry.store import Registry
from tasks.specs.datasets import default_model
from tasks.validation.evidence import (
    Verdict,
    build_evidence,
    decision_outcome,
    run_evidence,
    verdict,
)
from tasks.validation.explain import ExplainOptions
from tasks.validation.gates import GatePolicy, judge
from tasks.validation.prefect_tasks import (
    behaviour,
    evaluate,
    explain,
    load_models,
    load_test_set,
    record_decision,
    record_evidence,
)

Decision = Literal["challenger", "rejected"]


class ValidationParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_name: str | None = Field(default=None, description="Default: the demo's model.")
    candidate: int | None = Field(default=None, ge=1, description="Default: the newest version.")
    labels_uri: str | None = Field(
        default=None, description="Labelled entity rows; default data_prep's labels."
    )
    test_from: datetime | None = Field(
        default=None,
        description="Default: after both models' training data plus the label horizon.",
    )
    policy_block: str | None = Field(default=None, description="A ValidationPolicy block.")
    explain: ExplainOptions = Field(default_factory=ExplainOptions)
    seed: int = Field(default=0, ge=0)
    data_uri: str | None = Field(default=None, description="data_prep's output; data/<dataset>.")
    feature_repo_block: str | None = None
    registry_block: str | None = None


class ValidationResult(BaseModel):
    model: str
    version: int
    champion: int | None
    decision: Decision
    failed_gates: list[str]
    metrics: dict[str, float]
    record: str  # the registry record holding the evidence
    approval: dict[str, Any] | None = None


def _evaluate(
    params: ValidationParams, registry: Registry, policy: GatePolicy, name: str, run_id: str | None
) -> Verdict:
    """Evaluate, judge, explain and record the evidence: the costly part, once per flow run."""
    candidate, champion = load_models(registry, name, params.candidate)
    models = [candidate] if champion is None else [candidate, champion]
    spec = resolve_dataset(candidate.metadata["dataset"])
    data_uri = params.data_uri or f"data/{spec.name}"
    settings = load_or_default(FeatureRepo, params.feature_repo_block, FeatureRepo()).settings()
    test_from = pd.Timestamp(params.test_from, tz="UTC") if params.test_from else None
    test, data = load_test_set(spec, data_uri, params.labels_uri, models, settings, test_from)

    evaluations = [evaluate(m, test, spec) for m in models]  # scores kept for paired gates
    monotonic, invariance = behaviour(candidate, test, spec, policy.behaviour.rows, params.seed)
    old = evaluations[1] if champion else None
    gates = judge(policy, data, evaluations[0], old, monotonic, invariance)
    explanation = explain(registry, spec, test, candidate, champion, params.explain, params.seed)
    evidence = build_evidence(
        name, policy, data, evaluations, monotonic, invariance, gates, explanation, run_id
    )
    stamp = record_evidence(registry, evidence, explanation, policy.require_approval)
    return verdict(evidence, stamp)


def _recorded_by(
    run: FlowRun | None, registry: Registry, name: str, candidate: int | None
) -> tuple[str, dict[str, Any]] | None:
    """The evidence this flow run recorded before it started again, if it did."""
    if run is None or not asked_before(run):
        return None
    found = run_evidence(registry, name, str(run.id), candidate)
    if found is None and approval_fired(run):  # an answer to evidence that is no longer there
        raise RuntimeError(
            f"validation run {run.id} of '{name}' was answered, but the evidence it recorded "
            "is not in the registry"
        )
    return found


@flow(name="validation", log_prints=True)
def validation(params: ValidationParams = ValidationParams()) -> ValidationResult:  # noqa: B008
    """Gate a candidate against the champion; make it `challenger` or reject it, with evidence.

    The evidence is recorded once per flow run: a run that starts again (a deployment's run,
    suspended for approval, then answered; or a retry) reads back what it recorded and goes on
    from the approval. See flows/approval.py for how a run waits for a reviewer.
    """
    logger = get_run_logger()
    registry = load_or_default(ModelRegistry, params.registry_block, ModelRegistry()).registry()
    name = params.model_name or default_model()
    run = current_run()
    run_id = str(run.id) if run else None
    earlier = _recorded_by(run, registry, name, params.candidate)
    if earlier:
        stamp, evidence = earlier
        found = verdict(evidence, stamp)
        logger.info("%s v%s: evidence recorded by this run already: %s", name, found.version, stamp)
    else:
        policy = load_or_default(ValidationPolicy, params.policy_block, ValidationPolicy()).policy
        found = _evaluate(params, registry, policy, name, run_id)

    failing = list(found.failing)
    approval = None
    decision: Decision = "rejected" if failing else "challenger"
    if not failing and found.policy.require_approval:
        answer = ask_approval(found.policy.approval_timeout_s)
        approval = answer.model_dump() if answer else {"approve": False, "timed_out": True}
        if not (answer and answer.approve):
            decision = "rejected"
            failing = ["approval:timeout" if answer is None else "approval:rejected"]
    version = found.version
    outcome = decision_outcome(decision, failing, found.record, approval)
    record_decision(registry, name, version, outcome)
    if decision == "challenger":
        by = f"validation (flow run {flow_run.name})"
        why = f"passed the validation gates (evidence {found.record})"
        now = registry.advance_alias(name, "challenger", version, by=by, reason=why)
        if now == version:
            logger.info("%s v%s is now the challenger", name, version)
        else:
            logger.info("%s v%s passed; the challenger stays v%s, a newer one", name, version, now)
    else:
        logger.warning("%s v%s rejected; failed gates: %s", name, version, failing)
    return ValidationResult(
        model=name,
        version=version,
        champion=found.champion,
        decision=decision,
        failed_gates=failing,
        metrics=found.metrics,
        record=found.record,
        approval=approval,
    )
