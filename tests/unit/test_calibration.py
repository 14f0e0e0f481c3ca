from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deployments.calibration import CALIBRATION, calibration_map, logit, sigmoid
from deployments.predictor import ModelLoadError, load_version
from tasks.registry.store import Registry
from tasks.specs.datasets import get_dataset
from tasks.training.calibration import calibrate, fit_isotonic, fit_platt
from tasks.training.candidate import calibration_summary, register_candidate
from tasks.training.lightgbm_trainer import LightGBMParams
from tasks.training.trainers import Fitted, TrainingInputs, fit
from tasks.training.training_set import LabelledSet, Split, time_split
from tasks.validation.metrics import metrics

pytestmark = pytest.mark.unit
FEATURES = ["x1", "x2", "cat"]
SPEC = get_dataset("credit_risk")  # its label and timestamp columns name the synthetic ones
LABEL, TS = SPEC.label.column, SPEC.timestamp_field


def _imbalanced(n: int, seed: int = 0) -> pd.DataFrame:
    """About 10% positives with known probabilities `p`."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    cat = rng.integers(0, 4, n)
    p = sigmoid(1.5 * x1 - x2 + 0.8 * (cat == 2) - 3.5)
    return pd.DataFrame(
        {
            TS: pd.date_range("2025-01-01", periods=n, freq="h", tz="UTC"),
            "x1": x1,
            "x2": x2,
            "cat": cat,
            "p": p,
            LABEL: (rng.random(n) < p).astype(int),
        }
    )


def _fit(split: Split, **params) -> Fitted:
    inputs = TrainingInputs(split, FEATURES, ["cat"], LABEL, 0)
    return fit("lightgbm", inputs, LightGBMParams(num_boost_round=200, **params))


@pytest.fixture(scope="module")
def weighted() -> tuple[Split, Fitted]:
    """A model trained with scale_pos_weight on imbalanced data: its scores are inflated."""
    split = time_split(_imbalanced(20_000), TS)
    return split, _fit(split, class_imbalance="scale_pos_weight")


def test_platt_undoes_a_log_odds_shift() -> None:
    rng = np.random.default_rng(1)
    p = sigmoid(rng.normal(-2.5, 1.5, 50_000))
    labels = (rng.random(len(p)) < p).astype(int)
    spec = fit_platt(sigmoid(logit(p) + np.log(9.0)), labels)  # positives weighted by 9
    assert spec["a"] == pytest.approx(1.0, abs=0.05)
    assert spec["b"] == pytest.approx(-np.log(9.0), abs=0.1)


def test_platt_never_reverses_the_ranking() -> None:
    rng = np.random.default_rng(2)
    scores = rng.random(500)
    labels = (rng.random(500) < 1 - scores).astype(int)  # scores rank the rows backwards
    spec = fit_platt(scores, labels)
    assert spec["a"] == 1.0
    calibrated = calibration_map(spec)(scores)
    assert (np.argsort(calibrated) == np.argsort(scores)).all()
    assert calibrated.mean() == pytest.approx(labels.mean(), abs=0.01)


def test_isotonic_is_stored_as_breakpoints_applied_by_interpolation() -> None:
    rng = np.random.default_rng(3)
    scores = rng.random(2_000)
    labels = (rng.random(2_000) < scores**2).astype(int)
    spec = fit_isotonic(scores, labels)
    assert json.loads(json.dumps(spec)) == spec and len(spec["x"]) == len(spec["y"]) > 2
    assert (np.diff(spec["x"]) > 0).all() and (np.diff(spec["y"]) >= 0).all()
    grid = np.linspace(-0.5, 1.5, 101)
    np.testing.assert_array_equal(
        calibration_map(spec)(grid), np.interp(grid, spec["x"], spec["y"])
    )


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_calibration_corrects_reweighted_scores_toward_the_true_rates(weighted, method) -> None:
    split, fitted = weighted
    calibrated = calibrate(fitted, split.valid, LABEL, method)  # type: ignore[arg-type]
    assert calibrated.uncalibrated is fitted.predict
    labels, true_p = split.test[LABEL].to_numpy(), split.test["p"].to_numpy()
    raw, scores = fitted.predict(split.test), calibrated.predict(split.test)
    before, after = metrics(labels, raw)["ece"], metrics(labels, scores)["ece"]
    assert before > 0.05  # scale_pos_weight inflates the probabilities
    assert after < 0.03 and after < before / 3
    assert np.abs(scores - true_p).mean() < np.abs(raw - true_p).mean() / 2
    assert scores.mean() == pytest.approx(true_p.mean(), abs=0.01)


def test_calibration_none_changes_nothing(weighted) -> None:
    split, fitted = weighted
    same = calibrate(fitted, split.valid, LABEL, "none")
    assert same.files == fitted.files and same.predict is fitted.predict
    assert same.uncalibrated is None and same.details["calibration"] == {"method": "none"}


def _register(registry: Registry, name: str, split: Split, fitted: Fitted) -> int:
    frame = pd.concat([split.train, split.valid, split.test])
    data = LabelledSet(frame, FEATURES, ["cat"], "fp", {}, None)
    info = {"trainer": "lightgbm", "params": {}}
    return register_candidate(
        registry, name, SPEC, next(iter(SPEC.feature_services)), data, split, fitted, info, 100, 0
    ).version


def test_a_registered_version_stores_its_calibration_as_json_and_loads_it(
    weighted, tmp_path: Path
) -> None:
    split, fitted = weighted
    calibrated = calibrate(fitted, split.valid, LABEL, "platt")
    registry = Registry(str(tmp_path))
    number = _register(registry, "calibrated", split, calibrated)
    version = registry.get("calibrated", number)
    folder = tmp_path / "calibrated" / "versions" / str(number)
    assert version.files == [
        CALIBRATION,
        "drift-features.config.toml",
        "drift-features.x_ref.npy",
        "drift-scores.config.toml",
        "drift-scores.x_ref.npy",
        "drift.json",
        "features.json",
        "holdout.parquet",
        "model.onnx",
        "model.txt",
        "reference.parquet",
        "serving.json",
    ]
    stored = json.loads((folder / CALIBRATION).read_text())
    assert stored["method"] == "platt" and set(stored) == {"method", "a", "b"}
    for file in folder.iterdir():  # data only: no pickle anywhere in the version
        assert file.suffix not in {".pkl", ".pickle", ".joblib"}
        assert not file.read_bytes().startswith(b"\x80"), file.name

    loaded = load_version(tmp_path, "calibrated", number)
    scores = loaded.predict(split.test)
    np.testing.assert_array_equal(scores, calibrated.predict(split.test))
    meta = version.metadata
    assert meta["calibration"] == {"method": "platt", "file": CALIBRATION, "valid_rows": 3_000}
    labels = split.test[LABEL].to_numpy()
    for metric, value in metrics(labels, scores).items():  # training's test metrics, exactly
        assert meta["metrics"][f"test_{metric}"] == value
    assert meta["metrics"]["test_ece"] < meta["metrics"]["test_uncalibrated_ece"]
    assert (
        meta["metrics"]["test_uncalibrated_ece"]
        == metrics(labels, fitted.predict(split.test))["ece"]
    )
    summary = calibration_summary(meta)
    assert f"{meta['metrics']['test_uncalibrated_ece']:.4f} uncalibrated" in summary
    assert f"-> {meta['metrics']['test_ece']:.4f} calibrated" in summary


def test_a_version_without_calibration_loads_uncalibrated(weighted, tmp_path: Path) -> None:
    split, fitted = weighted
    registry = Registry(str(tmp_path))
    number = _register(registry, "before", split, fitted)  # as versions registered before
    assert CALIBRATION not in registry.get("before", number).files
    loaded = load_version(tmp_path, "before", number)
    np.testing.assert_array_equal(loaded.predict(split.test), fitted.predict(split.test))
    assert calibration_summary(registry.get("before", number).metadata).startswith(
        "Calibration: none"
    )


def test_a_malformed_calibration_fails_to_load(weighted, tmp_path: Path) -> None:
    split, fitted = weighted
    broken = calibrate(fitted, split.valid, LABEL, "platt")
    files = {**broken.files, CALIBRATION: json.dumps({"method": "beta"}).encode()}
    registry = Registry(str(tmp_path))
    number = _register(registry, "broken", split, Fitted(files, {}, broken.predict))
    with pytest.raises(ModelLoadError, match=r"v1: cannot load calibration.json: .*'beta'"):
        load_version(tmp_path, "broken", number)
