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
from tasks.validation.metrics import metrics, segment_masks, segment_metrics

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
    result = segment_metrics(bands, labels, np.array([0.2, 0.7, 0.5, 0.9]), min_rows=2)
    assert all(s.metrics is None for s in result)  # one row each: too small to score


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


def test_gates_respect_each_metrics_direction() -> None:
    champion = {"auc": 0.80, "pr_auc": 0.40, "logloss": 0.30, "brier": 0.1, "ece": 0.02}
    same = metric_gates(champion, champion, GatePolicy())
    assert failed(same) == [] and {g.gate for g in same} >= {"minimum:auc", "regression:logloss"}
    worse = {**champion, "auc": 0.785, "logloss": 0.33}
    assert [g.gate for g in failed(metric_gates(worse, champion, GatePolicy()))] == [
        "regression:auc",
        "regression:logloss",
    ]
    better_logloss = {**champion, "logloss": 0.2}
    assert failed(metric_gates(better_logloss, champion, GatePolicy())) == []
    nan_auc = {**champion, "auc": float("nan")}
    assert "minimum:auc" in {g.gate for g in failed(metric_gates(nan_auc, None, GatePolicy()))}
    capped = GatePolicy(maximums={"ece": 0.01})
    assert [g.gate for g in failed(metric_gates(champion, None, capped))] == ["maximum:ece"]


def test_segment_and_data_gates() -> None:
    from tasks.validation.metrics import SegmentMetrics

    m = {"auc": 0.8, "pr_auc": 0.4, "logloss": 0.3, "brier": 0.1, "ece": 0.02}
    old = [SegmentMetrics(segment="r=a", rows=500, positives=50, metrics=m)]
    new = [SegmentMetrics(segment="r=a", rows=500, positives=50, metrics={**m, "auc": 0.7})]
    small = [SegmentMetrics(segment="r=a", rows=5, positives=1, metrics=None)]
    assert [g.gate for g in failed(segment_gates(new, old, GatePolicy()))] == ["segment:auc[r=a]"]
    assert segment_gates(small, old, GatePolicy()) == []
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
