from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from tasks.specs.dataset_spec import InvarianceSpec, SegmentSpec
from tasks.validation.behaviour import invariance_check, monotonic_check
from tasks.validation.gates import (
    BehaviourGates,
    DataChecks,
    DataEvidence,
    GatePolicy,
    behaviour_gates,
    data_gates,
    failed,
    metric_gates,
    segment_gates,
)
from tasks.validation.metrics import evaluate_scores, metrics, segment_masks, segment_metrics

pytestmark = pytest.mark.unit


def _scored(n: int = 20_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.01, 0.99, n)
    return (rng.random(n) < p).astype("float64"), p


def test_metrics_match_sklearn_and_a_calibrated_model_has_a_small_ece() -> None:
    labels, p = _scored()
    m = metrics(labels, p)
    assert m["auc"] == pytest.approx(roc_auc_score(labels, p))
    assert m["ece"] < 0.02 and m["brier"] == pytest.approx(np.mean((p - labels) ** 2))
    overconfident = metrics(labels, np.clip(p * 1.6 - 0.3, 0, 1))
    assert overconfident["ece"] > 0.05 and overconfident["logloss"] > m["logloss"]
    assert np.isnan(metrics(np.zeros(10), p[:10])["auc"])  # one class: no AUC


def test_segments_by_code_and_by_band_with_missing_values() -> None:
    frame = pd.DataFrame({"region_code": [0, 1, 1, 2], "income": [10.0, 35.0, np.nan, 120.0]})
    by_code = segment_masks(frame, "region", SegmentSpec(feature="region_code", labels={0: "n"}))
    assert {k: m.sum() for k, m in by_code.items()} == {"region=n": 1, "region=1": 2, "region=2": 1}
    bands = segment_masks(frame, "income", SegmentSpec(feature="income", bins=[0, 30, 100]))
    assert {k: m.tolist() for k, m in bands.items()} == {
        "income=[0, 30)": [True, False, False, False],
        "income=[30, 100)": [False, True, False, False],
        "income=>= 100": [False, False, False, True],
        "income=missing": [False, False, True, False],
    }
    labels = np.array([0.0, 1.0, 0.0, 1.0])
    result = segment_metrics(bands, labels, np.array([0.2, 0.7, 0.5, 0.9]))
    assert [s.rows for s in result] == [1, 1, 1, 1]  # reported however small; the gates decide
    assert all(np.isnan(s.metrics["auc"]) and s.metrics["brier"] >= 0 for s in result)


def test_behaviour_checks_catch_a_wrong_direction_and_a_spurious_feature() -> None:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"missed": rng.integers(0, 6, 500), "noise": rng.normal(size=500)})

    def monotone(f: pd.DataFrame) -> np.ndarray:
        return 1 / (1 + np.exp(-(f["missed"].to_numpy() - 2)))

    def bumpy(f: pd.DataFrame) -> np.ndarray:  # risk dips at 3 missed payments
        return monotone(f) - 0.3 * (f["missed"].to_numpy() == 3)

    assert monotonic_check(monotone, frame, "missed", "increasing").violation_rate == 0.0
    bad = monotonic_check(bumpy, frame, "missed", "increasing")
    assert bad.violation_rate == 1.0 and bad.grid == [0, 1, 2, 3, 4, 5]
    shuffle = InvarianceSpec(features=["noise"])
    assert invariance_check(monotone, frame, shuffle, 0).mean_abs_change == 0.0

    def spurious(f: pd.DataFrame) -> np.ndarray:
        return monotone(f) * (0.5 + 0.5 * np.tanh(f["noise"].to_numpy()))

    moved = invariance_check(spurious, frame, shuffle, 0)
    gates = behaviour_gates([bad], [moved], BehaviourGates())
    assert [g.gate for g in failed(gates)] == [
        "behaviour:monotonic[missed]",
        "behaviour:invariance[noise]",
    ]


def _pair(n: int, noise: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, a candidate (the champion's logit plus noise) and the champion's true risk."""
    rng = np.random.default_rng(seed)
    logit = rng.normal(-1.5, 1.5, n)
    risk = 1 / (1 + np.exp(-logit))
    labels = (rng.random(n) < risk).astype("float64")
    return labels, 1 / (1 + np.exp(-(logit + noise * rng.normal(size=n)))), risk


def test_gates_respect_each_metrics_direction() -> None:
    labels, noisy, risk = _pair(3_000, noise=1.5)
    better, worse = evaluate_scores(2, labels, risk, {}), evaluate_scores(1, labels, noisy, {})
    policy = GatePolicy(max_regression={"auc": 0.01, "pr_auc": 0.02, "logloss": 0.02, "ece": 0.0})
    same = metric_gates(better, better, policy)
    assert failed(same) == [] and {g.gate for g in same} >= {"minimum:auc", "regression:logloss"}
    assert failed(metric_gates(better, worse, policy)) == []  # improvements never fail
    assert {g.gate for g in failed(metric_gates(worse, better, policy))} >= {
        "regression:auc",
        "regression:logloss",
    }
    one_class = evaluate_scores(3, np.zeros(50), risk[:50], {})
    assert "minimum:auc" in {g.gate for g in failed(metric_gates(one_class, None, policy))}
    capped = GatePolicy(maximums={"ece": 0.001})
    assert [g.gate for g in failed(metric_gates(worse, None, capped))] == ["maximum:ece"]


def test_segment_and_data_gates() -> None:
    labels, noisy, risk = _pair(3_000, noise=3.0)
    masks = {"r=a": np.arange(3_000) < 2_000, "r=b": np.arange(3_000) >= 2_000}
    new, old = evaluate_scores(2, labels, noisy, masks), evaluate_scores(1, labels, risk, masks)
    assert [g.gate for g in failed(segment_gates(new, old, GatePolicy()))] == [
        "segment:auc[r=a]",
        "segment:auc[r=b]",
    ]
    assert segment_gates(new, None, GatePolicy()) == []

    evidence = DataEvidence(
        test_rows=100,
        positives=0,
        worst_null_feature="x",
        worst_null_rate=0.9,
        fingerprint_trained="s:1",
        fingerprint_now="s:2",
        test_from="2026-01-01T00:00:00+00:00",
        trained_to="2026-02-01T00:00:00+00:00",
    )
    assert {g.gate for g in failed(data_gates(evidence, DataChecks()))} == {
        "data:min_test_rows",
        "data:both_classes",
        "data:feature_null_rate",
        "data:feature_set",
        "data:time_later",
    }
