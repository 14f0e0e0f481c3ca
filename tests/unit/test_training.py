from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from deployments.predictor import lightgbm_predictor
from tasks.training import torch_trainer
from tasks.training.lightgbm_trainer import LightGBMParams, lgb_params, train_lightgbm
from tasks.training.training_set import (
    TrainingDataError,
    check_training_set,
    outcome_known,
    time_split,
)

pytestmark = pytest.mark.unit


def _frame(n: int = 4_000, seed: int = 0, intercept: float = -1.5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    cat = rng.integers(0, 4, n)
    logit = 1.5 * x1 - 1.0 * x2 + (cat == 2) * 1.2 + 0.8 * x1 * x2 + intercept
    return pd.DataFrame(
        {
            "ts": pd.date_range("2025-01-01", periods=n, freq="h", tz="UTC"),
            "x1": x1,
            "x2": x2,
            "cat": cat,
            "y": (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int),
        }
    )


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: f.iloc[:0], "the training set is empty"),
        (lambda f: f.assign(y=0), r"label 'y' has a single class \(0\)"),
        (lambda f: f.assign(y=f["y"].where(f.index > 3)), r"label 'y' has 4 NaN value\(s\)"),
        (lambda f: f.drop(columns="x2"), r"lacks column\(s\) \['x2'\]"),
        (lambda f: f.assign(x1=np.nan), r"feature\(s\) \['x1'\] are null in every row"),
    ],
)
def test_bad_training_sets_fail_before_training(mutate, message) -> None:
    with pytest.raises(TrainingDataError, match=message):
        check_training_set(mutate(_frame()), ["x1", "x2", "cat"], "y")


def test_time_split_keeps_the_newest_rows_for_testing() -> None:
    split = time_split(_frame().sample(frac=1.0, random_state=1), "ts", 0.2, 0.1)
    assert len(split.train) == 2_800 and len(split.valid) == 800 and len(split.test) == 400
    assert (
        split.train["ts"].max()
        < split.valid["ts"].min()
        <= split.valid["ts"].max()
        < split.test["ts"].min()
    )


def test_lightgbm_learns_is_deterministic_and_stops_early() -> None:
    split = time_split(_frame(), "ts")
    params = LightGBMParams(num_boost_round=2_000, early_stopping_rounds=20)
    a = train_lightgbm(split.train, split.valid, ["x1", "x2", "cat"], ["cat"], "y", params, seed=3)
    b = train_lightgbm(split.train, split.valid, ["x1", "x2", "cat"], ["cat"], "y", params, seed=3)
    assert a.model_text == b.model_text
    assert a.best_iteration < 2_000
    assert a.metrics["valid_auc"] > 0.8
    assert "categorical_feature" in a.model_text or "cat_threshold" in a.model_text
    scores = lightgbm_predictor(a.model_text, ["x1", "x2", "cat"])(split.test)
    assert scores.shape == (len(split.test),) and ((scores >= 0) & (scores <= 1)).all()


def test_a_cut_never_splits_a_group_of_equal_timestamps() -> None:
    frame = _frame(1_000)
    frame["ts"] = frame["ts"].dt.floor("D")  # 24 rows share each timestamp
    split = time_split(frame, "ts", 0.15, 0.15)
    assert split.train["ts"].max() < split.valid["ts"].min()
    assert split.valid["ts"].max() < split.test["ts"].min()
    assert len(split.train) + len(split.valid) + len(split.test) == len(frame)


def test_the_embargo_keeps_each_splits_outcome_windows_out_of_the_next() -> None:
    frame = _frame(6_000)  # hourly: 250 days
    split = time_split(frame, "ts", 0.15, 0.15, embargo_days=30)
    gap = pd.Timedelta(days=30)
    assert split.train["ts"].max() + gap < split.valid["ts"].min()
    assert split.valid["ts"].max() + gap < split.test["ts"].min()
    assert split.cuts["left_out_embargo"] == len(frame) - sum(
        len(p) for p in (split.train, split.valid, split.test)
    )
    assert split.cuts["left_out_embargo"] >= 2 * 30 * 24 - 2
    with pytest.raises(TrainingDataError, match=r"the train split is empty .*400-day embargo"):
        time_split(frame, "ts", 0.15, 0.15, embargo_days=400)


def test_rows_whose_outcome_is_not_known_yet_are_left_out_and_counted() -> None:
    frame = _frame(2_400)  # hourly: 100 days
    frame.loc[:9, "y"] = np.nan  # labels not recorded
    known, summary = outcome_known(frame, "ts", "y", horizon_days=30)
    end = frame["ts"].max()
    assert summary["left_out_unknown_label"] == 10
    open_rows = (frame["ts"] + pd.Timedelta(days=30) > end).sum()
    assert summary["left_out_open_outcome"] == open_rows == 30 * 24
    assert len(known) == len(frame) - 10 - open_rows
    assert known["y"].notna().all() and (known["ts"] + pd.Timedelta(days=30) <= end).all()


def test_lightgbm_does_not_reweight_classes_by_default() -> None:
    """Reweighting inflates the probabilities that log loss, Brier and ECE judge: opt-in only."""
    labels = pd.Series([1] + [0] * 9)
    default = lgb_params(LightGBMParams(), labels, seed=0)
    assert not {"scale_pos_weight", "is_unbalance"} & set(default)
    weighted = lgb_params(LightGBMParams(class_imbalance="scale_pos_weight"), labels, seed=0)
    assert weighted["scale_pos_weight"] == 9.0


class _Launched(Exception):
    pass


def test_torch_pos_weight_is_off_by_default(monkeypatch) -> None:
    """The worker's loss weighs positives only when class_imbalance asks for it."""
    configs: list[dict] = []

    def launched(config: dict, on_epoch=None) -> None:
        configs.append(config)
        raise _Launched

    monkeypatch.setattr(torch_trainer, "run", launched)
    split = time_split(_frame(400), "ts")

    def worker_config(**params) -> dict:
        with pytest.raises(_Launched):
            torch_trainer.train_torch(
                split.train,
                split.valid,
                ["x1", "x2", "cat"],
                ["cat"],
                "y",
                torch_trainer.TorchParams(**params),
                seed=0,
            )
        return configs[-1]

    assert worker_config()["pos_weight"] is None
    positives = split.train["y"].sum()
    assert worker_config(class_imbalance="pos_weight")["pos_weight"] == pytest.approx(
        (len(split.train) - positives) / positives
    )


def test_reweighted_lightgbm_stops_early_on_auc() -> None:
    """Its log loss on the unweighted validation rows worsens from the first tree on."""
    split = time_split(_frame(intercept=-3.5), "ts")  # about 10% positives
    params = LightGBMParams(class_imbalance="scale_pos_weight", early_stopping_rounds=20)
    trained = train_lightgbm(split.train, split.valid, ["x1", "x2", "cat"], ["cat"], "y", params, 0)
    assert trained.best_iteration > 20 and trained.metrics["valid_auc"] > 0.8
