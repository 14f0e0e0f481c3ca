"""validation: candidate vs champion on one time-later test set -> gates -> challenger or not."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import pandas as pd
from prefect import flow, get_run_logger, pause_flow_run
from prefect.exceptions import FlowPauseTimeout
from prefect.input import RunInput
from pydantic import BaseModel, ConfigDict, Field

from blocks import FeatureRepo, ModelRegistry, ValidationPolicy, load_or_default, resolve_dataset
from tasks.specs.datasets import default_model
from tasks.validation.evidence import build_evidence, decision_outcome
from tasks.validation.explain import ExplainOptions
from tasks.validation.gates import GatePolicy, failed, judge
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
        name, policy, data, evaluations, monotonic, invariance, gates, explanation
    )
    stamp = record_evidence(registry, evidence, explanation, policy.require_approval)

    failing = [g.gate for g in failed(gates)]
    approval = None
    decision: Decision = "rejected" if failing else "challenger"
    if not failing and policy.require_approval:
        answer = ask_approval(policy)
        approval = answer.model_dump() if answer else {"approve": False, "timed_out": True}
        if not (answer and answer.approve):
            decision = "rejected"
            failing = ["approval:timeout" if answer is None else "approval:rejected"]
    record_decision(
        registry, name, candidate.version, decision_outcome(decision, failing, stamp, approval)
    )
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
        metrics=evaluations[0].metrics,
        record=stamp,
        approval=approval,
    )
