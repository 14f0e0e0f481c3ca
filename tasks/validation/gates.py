"""The promotion policy: typed gates over the evaluation evidence, and the decision they make."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from deployments.fingerprint import changed_views
from tasks.config import Strict
from tasks.validation.behaviour import InvarianceResult, MonotonicResult
from tasks.validation.intervals import Method, regression_intervals, worse_by
from tasks.validation.metrics import (
    Evaluation,
    HigherMetric,
    LowerMetric,
    Metric,
    SegmentMetrics,
)

GateKind = Literal["minimum", "maximum", "regression", "segment", "data", "behaviour"]


class DataChecks(Strict):
    min_test_rows: int = Field(default=300, ge=1)
    max_feature_null_rate: float = Field(default=0.6, ge=0.0, le=1.0)
    require_same_features: bool = Field(
        default=True, description="The feature set's fingerprint equals the one it trained on."
    )


class BehaviourGates(Strict):
    max_monotonic_violation_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    max_invariance_change: float = Field(
        default=0.02, ge=0.0, le=1.0, description="Mean |change| of the predicted probability."
    )
    rows: int = Field(default=1_000, ge=10, le=100_000, description="Test rows checked.")


class GatePolicy(Strict):
    """What a candidate must show to become `challenger`."""

    minimums: dict[HigherMetric, float] = Field(default={"auc": 0.6})
    maximums: dict[LowerMetric, float] = Field(default_factory=dict)
    max_regression: dict[Metric, float] = Field(
        default={"auc": 0.01, "pr_auc": 0.02, "logloss": 0.02},
        description="Worst allowed move against the champion, per metric: a regression gate "
        "fails when its whole confidence interval lies beyond it.",
    )
    max_segment_regression: dict[Metric, float] = Field(
        default={"auc": 0.05}, description="The same, in every segment."
    )
    confidence: float = Field(
        default=0.95, ge=0.5, lt=1.0, description="Of the paired regression intervals."
    )
    bootstrap_resamples: int = Field(
        default=500, ge=100, le=20_000, description="For PR-AUC and ECE regressions."
    )
    bootstrap_seed: int = Field(default=0, ge=0)
    min_segment_rows: int = Field(
        default=200, ge=10, description="Smaller segments: reported, not gated."
    )
    min_segment_class_rows: int = Field(
        default=20, ge=1, description="Fewer positives or negatives: reported, not gated."
    )
    data: DataChecks = Field(default_factory=DataChecks)
    behaviour: BehaviourGates = Field(default_factory=BehaviourGates)
    require_approval: bool = False
    approval_timeout_s: int = Field(default=86_400, ge=1, le=30 * 86_400)


class GateResult(BaseModel):
    gate: str  # e.g. "minimum:auc", "segment:auc[<segment>=<value>]", "data:min_test_rows"
    kind: GateKind
    passed: bool
    value: float | None = None  # regressions: worse by (positive: the candidate is worse)
    threshold: float | None = None
    detail: str = ""
    low: float | None = None  # regressions: the interval of `value`
    high: float | None = None
    confidence: float | None = None
    method: Method | None = None
    gated: bool = True  # False: reported only (a segment too small for a useful interval)


class DataEvidence(BaseModel):
    test_rows: int
    positives: int
    worst_null_feature: str | None
    worst_null_rate: float
    fingerprint_trained: str
    fingerprint_now: str
    views_trained: dict[str, str] = Field(default_factory=dict)  # view -> definition digest
    views_now: dict[str, str] = Field(default_factory=dict)
    test_from: datetime
    trained_to: datetime
    horizon_days: int = 0
    left_out_open_outcome: int = 0
    snapshot: str | None = None


def _fmt(value: float) -> str:
    return f"{value:.4f}"


def metric_gates(
    candidate: Evaluation, champion: Evaluation | None, policy: GatePolicy
) -> list[GateResult]:
    """Absolute bounds on the candidate's metrics; regressions against the champion's."""
    bounds: list[tuple[GateKind, str, float]] = [
        *(("minimum", m, limit) for m, limit in policy.minimums.items()),
        *(("maximum", m, limit) for m, limit in policy.maximums.items()),
    ]
    out = []
    for kind, metric, limit in bounds:
        v = candidate.metrics[metric]
        within = v >= limit if kind == "minimum" else v <= limit
        out.append(
            GateResult(
                gate=f"{kind}:{metric}",
                kind=kind,
                passed=not math.isnan(v) and within,
                value=v,
                threshold=limit,
                detail=f"{metric} {_fmt(v)} must be {'>=' if kind == 'minimum' else '<='} "
                f"{_fmt(limit)}",
            )
        )
    if champion is not None:
        _same_rows(candidate, champion)
        out += _regressions(
            "regression",
            "",
            (candidate.labels, candidate.scores, champion.scores),
            (candidate.metrics, champion.metrics),
            policy.max_regression,
            policy,
        )
    return out


def _same_rows(candidate: Evaluation, champion: Evaluation) -> None:
    if not np.array_equal(candidate.labels, champion.labels):
        raise ValueError(
            f"v{candidate.version} and v{champion.version} were not evaluated on the same rows"
        )


def _regressions(
    kind: GateKind,
    where: str,
    rows: tuple[np.ndarray, np.ndarray, np.ndarray],
    values: tuple[dict[str, float], dict[str, float]],
    allowed: dict[Metric, float],
    policy: GatePolicy,
) -> list[GateResult]:
    """A gate per metric on the paired interval of worse-by (labels, candidate and champion
    scores on the same `rows`): it fails only when the whole interval exceeds the limit."""
    new, old = values
    wanted = [m for m in allowed if not math.isnan(old[m])]
    intervals = regression_intervals(
        *rows, wanted, policy.confidence, policy.bootstrap_resamples, policy.bootstrap_seed
    )
    out = []
    for metric in wanted:
        limit, iv = allowed[metric], intervals[metric]
        out.append(
            GateResult(
                gate=f"{kind}:{metric}{f'[{where}]' if where else ''}",
                kind=kind,
                passed=not math.isnan(iv.low) and iv.low <= limit,
                value=iv.worse,
                threshold=limit,
                low=iv.low,
                high=iv.high,
                confidence=policy.confidence,
                method=iv.method,
                detail=f"{metric} {_fmt(new[metric])} vs champion {_fmt(old[metric])}"
                + (f" in {where}" if where else "")
                + f": worse by {_fmt(iv.worse)} [{policy.confidence:.0%} CI {_fmt(iv.low)}, "
                f"{_fmt(iv.high)}], at most {_fmt(limit)} allowed",
            )
        )
    return out


def _reported(
    seg: SegmentMetrics, old: dict[str, float], allowed: dict[Metric, float], policy: GatePolicy
) -> list[GateResult]:
    """A segment too small for a useful interval: its point regressions, not gated."""
    negatives = seg.rows - seg.positives
    why = (
        f"{seg.rows} rows, {seg.positives} positive, {negatives} negative (gated from "
        f"{policy.min_segment_rows} rows and {policy.min_segment_class_rows} of each class)"
    )
    out = []
    for metric, limit in allowed.items():
        new_value, old_value = seg.metrics[metric], old[metric]
        if math.isnan(old_value):
            continue
        worse = float(worse_by(metric, new_value, old_value))
        out.append(
            GateResult(
                gate=f"segment:{metric}[{seg.segment}]",
                kind="segment",
                passed=True,
                gated=False,
                value=worse,
                threshold=limit,
                detail=f"{metric} {_fmt(new_value)} vs champion {_fmt(old_value)} in "
                f"{seg.segment}: worse by {_fmt(worse)}; not gated: {why}",
            )
        )
    return out


def segment_gates(
    candidate: Evaluation, champion: Evaluation | None, policy: GatePolicy
) -> list[GateResult]:
    """The regression gates in every segment large enough, with both classes well represented,
    for a useful interval; the smaller ones reported with their point values."""
    if champion is None:
        return []
    _same_rows(candidate, champion)
    old = {s.segment: s.metrics for s in champion.segments}
    allowed = policy.max_segment_regression
    out = []
    for seg in candidate.segments:
        previous = old.get(seg.segment)
        if previous is None:
            continue
        fewest = min(seg.positives, seg.rows - seg.positives)
        if seg.rows < policy.min_segment_rows or fewest < policy.min_segment_class_rows:
            out += _reported(seg, previous, allowed, policy)
            continue
        mask = candidate.masks[seg.segment]
        rows = (candidate.labels[mask], candidate.scores[mask], champion.scores[mask])
        out += _regressions("segment", seg.segment, rows, (seg.metrics, previous), allowed, policy)
    return out


def data_gates(data: DataEvidence, policy: DataChecks) -> list[GateResult]:
    out = [
        GateResult(
            gate="data:min_test_rows",
            kind="data",
            passed=data.test_rows >= policy.min_test_rows,
            value=data.test_rows,
            threshold=policy.min_test_rows,
            detail=f"{data.test_rows} test rows, at least {policy.min_test_rows} needed",
        ),
        GateResult(
            gate="data:both_classes",
            kind="data",
            passed=0 < data.positives < data.test_rows,
            value=data.positives,
            detail=f"{data.positives} positive of {data.test_rows} test rows",
        ),
        GateResult(
            gate="data:feature_null_rate",
            kind="data",
            passed=data.worst_null_rate <= policy.max_feature_null_rate,
            value=data.worst_null_rate,
            threshold=policy.max_feature_null_rate,
            detail=f"worst: '{data.worst_null_feature}' null in {data.worst_null_rate:.1%} of rows",
        ),
        GateResult(
            gate="data:time_later",
            kind="data",
            passed=data.test_from > data.trained_to + timedelta(days=data.horizon_days),
            detail=f"test rows from {data.test_from}, training data to {data.trained_to} "
            f"plus the {data.horizon_days}-day label horizon",
        ),
    ]
    if policy.require_same_features:
        changed = changed_views(data.views_trained, data.views_now) if data.views_trained else []
        same = data.fingerprint_trained == data.fingerprint_now
        where = f"; changed: {', '.join(changed)}" if changed and not same else ""
        out.append(
            GateResult(
                gate="data:feature_set",
                kind="data",
                passed=same,
                detail=f"trained on {data.fingerprint_trained}, store now "
                f"{data.fingerprint_now}{where}",
            )
        )
    return out


def behaviour_gates(
    monotonic: list[MonotonicResult], invariance: list[InvarianceResult], policy: BehaviourGates
) -> list[GateResult]:
    out = [
        GateResult(
            gate=f"behaviour:monotonic[{m.feature}]",
            kind="behaviour",
            passed=m.violation_rate <= policy.max_monotonic_violation_rate,
            value=m.violation_rate,
            threshold=policy.max_monotonic_violation_rate,
            detail=f"risk {m.direction} in {m.feature}: {m.violation_rate:.1%} of {m.rows} rows "
            f"move the other way (worst by {m.worst_move:.4f})",
        )
        for m in monotonic
    ]
    out += [
        GateResult(
            gate=f"behaviour:invariance[{'+'.join(i.features)}]",
            kind="behaviour",
            passed=i.mean_abs_change <= policy.max_invariance_change,
            value=i.mean_abs_change,
            threshold=policy.max_invariance_change,
            detail=f"{i.perturbation} of {', '.join(i.features)} moves predictions by "
            f"{i.mean_abs_change:.4f} on average (max {i.max_abs_change:.4f})",
        )
        for i in invariance
    ]
    return out


def failed(gates: list[GateResult]) -> list[GateResult]:
    return [g for g in gates if not g.passed]


def judge(
    policy: GatePolicy,
    data: DataEvidence,
    candidate: Evaluation,
    champion: Evaluation | None,
    monotonic: list[MonotonicResult],
    invariance: list[InvarianceResult],
) -> list[GateResult]:
    """Every gate of the policy on the evidence; against the champion where there is one."""
    return [
        *data_gates(data, policy.data),
        *metric_gates(candidate, champion, policy),
        *segment_gates(candidate, champion, policy),
        *behaviour_gates(monotonic, invariance, policy.behaviour),
    ]
