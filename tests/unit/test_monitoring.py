"""Monitoring's plain logic: detectors saved without pickle, windows and the watermark, live
accuracy from late labels, episodes that are emitted again until answered."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deployments.request_log import LABELS, REQUESTS, SegmentWriter
from tasks.monitoring.accuracy import import_labels, join_labels, live_accuracy
from tasks.monitoring.check import check_model
from tasks.monitoring.detectors import (
    DetectorMismatch,
    benjamini_hochberg,
    check_features,
    check_window,
    fit_detector_files,
    load_detectors,
    read_files,
)
from tasks.monitoring.episodes import Episode, episodes_to_emit
from tasks.monitoring.policy import MonitoringPolicy
from tasks.monitoring.traffic import Watermark, stamp

FEATURES = ["income", "amount", "region"]
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _frame(rng: np.random.Generator, n: int, shift: float = 0.0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "income": rng.normal(50 + shift * 10, 10, n),
            "amount": rng.lognormal(3, 0.5, n),
            "region": rng.integers(0, 4, n).astype(float),
        }
    )


def _score(frame: pd.DataFrame) -> np.ndarray:
    return 1 / (1 + np.exp(-(frame["income"] - 50) / 10))


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    reference = _frame(rng, 3000)
    return fit_detector_files(reference, _score(reference), FEATURES, ["region"])


def _window(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(score=_score(frame))


def test_detectors_are_saved_without_pickle_and_reload_to_the_same_p_values(files, tmp_path):
    assert not [f for f in files if f.endswith((".dill", ".pkl", ".pickle"))]
    assert json.loads(files["drift.json"])["categorical"] == ["region"]
    window = _window(_frame(np.random.default_rng(1), 1000, shift=0.3))
    first = check_window(load_detectors(read_files(files)), window, 0.05, "a", "b")
    again = check_window(load_detectors(read_files(files)), window, 0.05, "a", "b")
    assert [f.p_value for f in first.features] == [f.p_value for f in again.features]
    assert first.score_p_value == again.score_p_value


def test_a_shifted_feature_is_found_and_an_unshifted_window_is_not(files) -> None:
    detectors = load_detectors(read_files(files))
    drifted = check_window(
        detectors, _window(_frame(np.random.default_rng(2), 1000, 0.3)), 0.05, "a", "b"
    )
    assert drifted.drift and drifted.drifted_features == ["income"] and drifted.score_drifted
    # 5% by design, averaged over reference samples (given one reference, its own sampling
    # noise moves the rate), so: 10 references, 20 undrifted windows each
    alarms = 0
    for r in range(10):
        reference = _frame(np.random.default_rng(100 + r), 3000)
        fitted = fit_detector_files(reference, _score(reference), FEATURES, ["region"])
        each = load_detectors(read_files(fitted))
        alarms += sum(
            check_window(
                each, _window(_frame(np.random.default_rng([r, i]), 1000)), 0.05, "a", "b"
            ).drift
            for i in range(20)
        )
    assert alarms <= 0.08 * 200


def test_a_detector_for_other_features_names_both_sets(files) -> None:
    detectors = load_detectors(read_files(files))
    with pytest.raises(DetectorMismatch, match=r"version 4: its detectors watch \['income'"):
        check_features(detectors, ["income", "amount", "age"], 4)


def test_benjamini_hochberg_rejects_the_step_up_set() -> None:
    p = np.array([0.01, 0.035, 0.02, 0.20])  # sorted: .01 .02 .035 .2 vs q*k/m .0125 .025 .0375
    assert benjamini_hochberg(p, 0.05).tolist() == [True, True, True, False]
    assert benjamini_hochberg(np.array([0.04, 0.001, 0.03]), 0.05).tolist() == [True, True, True]
    assert not benjamini_hochberg(np.array([0.3, 0.6]), 0.05).any()


def _write(log: Path, frame: pd.DataFrame, version: int, role: str, start: datetime, rid: str):
    writer = SegmentWriter(log / REQUESTS, REQUESTS)
    scores = _score(frame)
    writer.append(
        {
            "request_id": f"{rid}-{i}",
            "row": 0,
            "time": stamp(start + timedelta(seconds=i)),
            "model": "m",
            "version": version,
            "role": role,
            "features": {f: frame[f].iloc[i] for f in FEATURES},
            "score": float(scores.iloc[i]),
            "latency_ms": 1.0,
        }
        for i in range(len(frame))
    )
    writer.close()


def test_windows_continue_from_the_watermark_and_short_tails_wait(files, tmp_path) -> None:
    rng = np.random.default_rng(3)
    policy = MonitoringPolicy(window_rows=400, min_rows=150, settle_s=0)
    detectors = load_detectors(read_files(files))
    _write(tmp_path, _frame(rng, 900), 1, "main", T0, "a")  # 2 windows + 100 rows waiting
    _write(tmp_path, _frame(rng, 100), 2, "canary", T0, "b")  # too few
    now = T0 + timedelta(hours=1)
    first = check_model(tmp_path, "m", Watermark(), policy, lambda v: detectors, now)
    assert [(c["version"], c["rows"]) for c in first.checks] == [(1, 400), (1, 400)]
    assert first.insufficient == [
        {"version": 1, "role": "main", "rows": 100},
        {"version": 2, "role": "canary", "rows": 100},
    ]
    # 300 more for v1 (100 waiting + 300 = one window), a corrupt line, a half-written line
    _write(tmp_path, _frame(rng, 300), 1, "main", T0 + timedelta(minutes=20), "c")
    (tmp_path / REQUESTS / "requests-20261101T000000000000Z-h-1-9.jsonl").write_text(
        "{not json\n" + '{"request_id": "x", "time": "2026-11-01T00:30:00Z"'
    )
    second = check_model(tmp_path, "m", first.mark, policy, lambda v: detectors, now)
    assert [(c["version"], c["rows"]) for c in second.checks] == [(1, 400)]
    assert second.checks[0]["first"] == stamp(T0 + timedelta(seconds=800))
    assert any("not json" in s or "Expecting" in s for s in second.skipped)
    # nothing new: no check, and a round trip through the file keeps the same position
    path = tmp_path / "mark.json"
    second.mark.save(path)
    third = check_model(tmp_path, "m", Watermark.load(path), policy, lambda v: detectors, now)
    assert third.checks == [] and third.records == 100  # the canary's 100 still wait


def test_an_empty_log_is_no_traffic(tmp_path) -> None:
    policy = MonitoringPolicy(settle_s=0)
    check = check_model(tmp_path, "m", Watermark(), policy, lambda v: pytest.fail("no load"))
    assert (check.checks, check.insufficient, check.records, check.labels) == ([], [], 0, 0)


def test_live_accuracy_joins_late_labels_and_counts_unknown_ids(tmp_path) -> None:
    rng = np.random.default_rng(4)
    frame = _frame(rng, 600)
    _write(tmp_path, frame, 1, "main", datetime.now(UTC) - timedelta(hours=1), "r")
    truth = (rng.random(600) < _score(frame)).astype(float)
    concept = 1 - truth  # the same features, the relation turned around
    labels = pd.DataFrame(
        {"request_id": [f"r-{i}" for i in range(600)] + ["nobody"], "label": [*concept, 1.0]}
    )
    labels.to_csv(tmp_path / "labels.csv", index=False)
    assert import_labels(tmp_path / "labels.csv", tmp_path, "m") == 601
    joined = join_labels(tmp_path, "m", stamp(datetime.now(UTC) - timedelta(days=1)))
    assert (joined.labels, joined.unmatched, len(joined.frame)) == (601, 1, 600)
    (result,) = live_accuracy(joined.frame, 500, 200, 0.7)
    assert result.labelled == 500 and result.auc < 0.5 and result.below_floor
    # a later, corrected label wins
    fixed = pd.DataFrame({"request_id": [f"r-{i}" for i in range(600)], "label": truth})
    fixed.to_parquet(tmp_path / "fixed.parquet")
    import_labels(tmp_path / "fixed.parquet", tmp_path, "m")
    joined = join_labels(tmp_path, "m", stamp(datetime.now(UTC) - timedelta(days=1)))
    (result,) = live_accuracy(joined.frame, 500, 200, 0.7)
    assert result.auc > 0.7 and not result.below_floor


def test_a_bad_labels_file_is_refused_whole(tmp_path) -> None:
    pd.DataFrame({"request_id": ["a", "b"], "label": [1, "yes"]}).to_csv(tmp_path / "l.csv")
    with pytest.raises(ValueError, match=r"l.csv: row 1: label must be a number"):
        import_labels(tmp_path / "l.csv", tmp_path, "m")
    pd.DataFrame({"id": ["a"], "label": [1]}).to_csv(tmp_path / "k.csv")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['request_id'\]"):
        import_labels(tmp_path / "k.csv", tmp_path, "m")
    assert not (tmp_path / LABELS).exists()


def test_an_unanswered_episode_is_emitted_again_once_due() -> None:
    old = stamp(datetime.now(UTC) - timedelta(hours=2))
    episode = Episode("mlops.model.drift-detected", 3, "r1", {}, old, old)
    still, emit = episodes_to_emit([episode], [], [], reemit_after_s=3600)
    assert emit == [episode] and episode.emitted == 2
    still, emit = episodes_to_emit(still, [], [], reemit_after_s=3600)
    assert emit == [] and still == [episode]  # just emitted: not due yet
    replaced, _ = episodes_to_emit(still, [], [], reemit_after_s=0, champion=4)
    assert replaced == []  # v3 no longer serves as champion: its episode is history
    answered = [datetime.now(UTC) - timedelta(hours=1)]  # a retraining after the detection
    still, emit = episodes_to_emit(still, [], answered, reemit_after_s=0)
    assert (still, emit) == ([], [])


def test_young_records_wait_and_old_predictions_are_not_joined(files, tmp_path) -> None:
    detectors = load_detectors(read_files(files))
    _write(tmp_path, _frame(np.random.default_rng(5), 300), 1, "main", T0, "s")  # T0 .. T0+299s
    at = T0 + timedelta(seconds=400)
    settled = MonitoringPolicy(window_rows=100, min_rows=50, settle_s=200)
    check = check_model(tmp_path, "m", Watermark(), settled, lambda v: detectors, at)
    assert check.records == 201 and check.until == stamp(T0 + timedelta(seconds=200))  # <= until
    pd.DataFrame({"request_id": ["s-0", "s-299"], "label": [1, 0]}).to_csv(tmp_path / "l.csv")
    import_labels(tmp_path / "l.csv", tmp_path, "m")
    since = stamp(T0 + timedelta(seconds=100))  # what a look-back ending there keeps
    assert join_labels(tmp_path, "m", since).frame["time"].tolist() == [
        stamp(T0 + timedelta(seconds=299))
    ]
