"""Regression gates on paired intervals: DeLong, the normal interval of per-row differences and
the paired bootstrap, and how the gates and their evidence use them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

from tasks.validation.evidence import gate_rows
from tasks.validation.gates import GatePolicy, failed, metric_gates, segment_gates
from tasks.validation.intervals import (
    delong,
    paired_bootstrap,
    paired_mean,
    regression_intervals,
    weighted_metrics,
)
from tasks.validation.metrics import Evaluation, evaluate_scores

pytestmark = pytest.mark.unit
ALL = ["auc", "pr_auc", "logloss", "brier", "ece"]


def _pair(n: int, noise: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, a candidate (the champion's logit plus noise) and the champion's true risk."""
    rng = np.random.default_rng(seed)
    logit = rng.normal(-1.5, 1.5, n)
    risk = 1 / (1 + np.exp(-logit))
    labels = (rng.random(n) < risk).astype("float64")
    return labels, 1 / (1 + np.exp(-(logit + noise * rng.normal(size=n)))), risk


def _evaluations(
    labels: np.ndarray, new: np.ndarray, old: np.ndarray, masks: dict[str, np.ndarray]
) -> tuple[Evaluation, Evaluation]:
    return evaluate_scores(2, labels, new, masks), evaluate_scores(1, labels, old, masks)


def test_a_truly_worse_candidate_fails_on_its_whole_interval() -> None:
    labels, noisy, risk = _pair(3_000, noise=1.5)
    new, old = _evaluations(labels, noisy, risk, {})
    gates = {g.gate: g for g in metric_gates(new, old, GatePolicy(bootstrap_resamples=300))}
    assert {"regression:auc", "regression:pr_auc"} <= {g.gate for g in failed(list(gates.values()))}
    auc, pr_auc = gates["regression:auc"], gates["regression:pr_auc"]
    assert auc.method == "delong" and pr_auc.method == "bootstrap"
    for g in (auc, pr_auc):
        assert g.low is not None and g.high is not None and g.threshold is not None
        assert g.threshold < g.low < g.value < g.high and g.confidence == 0.95


def test_a_point_regression_within_the_noise_passes() -> None:
    # A slightly noisier candidate on 400 rows: its point AUC is worse by more than the limit,
    # but the interval reaches below it, so the point alone does not fail it.
    labels, noisy, risk = _pair(400, noise=0.5, seed=4)
    new, old = _evaluations(labels, noisy, risk, {})
    (auc,) = metric_gates(new, old, GatePolicy(minimums={}, max_regression={"auc": 0.005}))
    assert auc.threshold is not None and auc.low is not None
    assert auc.value is not None and auc.value > auc.threshold >= auc.low and auc.passed


def test_an_identical_candidate_passes_every_bootstrap_seed() -> None:
    labels, _, risk = _pair(2_000, noise=0.0)
    masks = {"r=a": np.arange(2_000) < 1_200, "r=b": np.arange(2_000) >= 1_200}
    new, old = _evaluations(labels, risk, risk.copy(), masks)
    limits = dict.fromkeys(ALL, 0.0)
    for seed in range(100):
        policy = GatePolicy(
            max_regression=limits,
            max_segment_regression=limits,
            bootstrap_resamples=100,
            bootstrap_seed=seed,
        )
        gates = metric_gates(new, old, policy) + segment_gates(new, old, policy)
        assert len(gates) == 1 + 3 * len(ALL) and failed(gates) == [], seed


def test_a_small_segment_is_reported_with_its_values_not_gated() -> None:
    labels, noisy, risk = _pair(3_000, noise=3.0)
    rows = np.arange(3_000)
    rare = np.r_[np.flatnonzero(labels == 1)[:10], np.flatnonzero(labels == 0)[:390]]
    masks = {
        "r=big": rows < 2_000,
        "r=small": rows >= 2_850,  # 150 rows, fewer than min_segment_rows
        "r=rare": np.isin(rows, rare),  # 400 rows, only 10 positives
    }
    new, old = _evaluations(labels, noisy, risk, masks)
    gates = {g.gate: g for g in segment_gates(new, old, GatePolicy())}
    assert [g.gate for g in failed(list(gates.values()))] == ["segment:auc[r=big]"]
    segments = {s.segment: s for s in new.segments}
    assert segments["r=small"].rows == 150
    assert (segments["r=rare"].rows, segments["r=rare"].positives) == (400, 10)
    for name in ("r=small", "r=rare"):
        g = gates[f"segment:auc[{name}]"]
        assert not g.gated and g.passed and g.low is None and "not gated" in g.detail
        seg_new, seg_old = (next(s for s in e.segments if s.segment == name) for e in (new, old))
        assert g.value == pytest.approx(seg_old.metrics["auc"] - seg_new.metrics["auc"])
        assert f"auc {seg_new.metrics['auc']:.4f} vs champion" in g.detail
    assert gates["segment:auc[r=small]"].value > 0.05  # beyond the limit, yet only reported


def test_weighted_metrics_match_sklearn_with_sample_weights() -> None:
    labels, noisy, _ = _pair(1_500, noise=1.0)
    scores = np.round(noisy, 2)  # ties
    weights = np.random.default_rng(1).poisson(1.0, (3, 1_500)).astype("uint8")
    got = weighted_metrics(labels, scores, weights, ALL)
    for k, w in enumerate(weights):
        assert got["auc"][k] == pytest.approx(roc_auc_score(labels, scores, sample_weight=w))
        ap = average_precision_score(labels, scores, sample_weight=w)
        assert got["pr_auc"][k] == pytest.approx(ap)
        assert got["logloss"][k] == pytest.approx(log_loss(labels, scores, sample_weight=w))
        assert got["brier"][k] == pytest.approx(brier_score_loss(labels, scores, sample_weight=w))


def test_analytic_intervals_agree_with_a_paired_bootstrap() -> None:
    labels, noisy, risk = _pair(4_000, noise=0.8, seed=2)
    _, draws = paired_bootstrap(labels, noisy, risk, ["auc", "logloss"], 2_000, seed=0)
    for analytic, metric in (
        (delong(labels, noisy, risk, 0.95), "auc"),
        (paired_mean("logloss", labels, noisy, risk, 0.95), "logloss"),
    ):
        low, high = np.quantile(draws[metric], [0.025, 0.975])
        width = analytic.high - analytic.low
        assert abs(analytic.low - low) < 0.1 * width and abs(analytic.high - high) < 0.1 * width
        assert np.std(draws[metric]) == pytest.approx(width / (2 * 1.96), rel=0.1)
    assert delong(labels, noisy, risk, 0.95).worse == pytest.approx(
        roc_auc_score(labels, risk) - roc_auc_score(labels, noisy)
    )


def test_intervals_narrow_with_more_rows_and_widen_with_confidence() -> None:
    labels, noisy, risk = _pair(8_000, noise=1.0)
    few = regression_intervals(labels[:800], noisy[:800], risk[:800], ALL, 0.95, 200, 0)
    many = regression_intervals(labels, noisy, risk, ALL, 0.95, 200, 0)
    wider = regression_intervals(labels, noisy, risk, ALL, 0.99, 200, 0)
    for m in ALL:
        assert many[m].low <= many[m].worse <= many[m].high
        assert many[m].high - many[m].low < few[m].high - few[m].low
        assert wider[m].low <= many[m].low and wider[m].high >= many[m].high


def test_gate_rows_show_the_interval_and_the_evidence_stays_small() -> None:
    labels, noisy, risk = _pair(3_000, noise=1.5)
    masks = {"r=small": np.arange(3_000) < 100}
    new, old = _evaluations(labels, noisy, risk, masks)
    gates = metric_gates(new, old, GatePolicy()) + segment_gates(new, old, GatePolicy())
    rows = {r["gate"]: r for r in gate_rows({"gates": [g.model_dump() for g in gates]})}
    auc = next(g for g in gates if g.gate == "regression:auc")
    assert rows["regression:auc"]["interval"] == f"[{auc.low:.4f}, {auc.high:.4f}] 95% delong"
    assert f"[95% CI {auc.low:.4f}, {auc.high:.4f}]" in rows["regression:auc"]["detail"]
    assert rows["regression:pr_auc"]["interval"].endswith("95% bootstrap")
    assert rows["minimum:auc"]["interval"] == ""
    assert rows["segment:auc[r=small]"]["result"] == "not gated"
    assert list(rows)[-1] == "segment:auc[r=small]"  # failures first, reported-only last
    assert set(new.model_dump()) == {"version", "metrics", "segments"}  # no per-row arrays
    assert len(json.dumps([new.model_dump(), *(g.model_dump() for g in gates)])) < 5_000
