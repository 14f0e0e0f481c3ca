"""The LightGBM trainer: early stopping, class imbalance, native categoricals, deterministic."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import lightgbm as lgb
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from tasks.progress import Progress, progress, run_logger


class LightGBMParams(BaseModel):
    """LightGBM hyperparameters with defaults that work on the demo data.

    `class_imbalance` reweights the positive class ("scale_pos_weight": by negatives per
    positive; "is_unbalance": LightGBM's own); either inflates the predicted probabilities, which
    the training flow's calibration then has to undo, so the default leaves the classes as they are.
    """

    model_config = ConfigDict(extra="forbid")

    # Small trees, learning slowly: on the demo's few thousand rows, whose risk is mostly
    # additive, 31 leaves at 0.05 overfit within 20-50 rounds and lost to the EBM glass box
    # (test AUC 0.728 vs 0.734); 7 leaves at 0.03 reach 0.746 (README, "Validation").
    num_leaves: int = Field(default=7, ge=2, le=4096)
    learning_rate: float = Field(default=0.03, gt=0.0, le=1.0)
    num_boost_round: int = Field(default=1000, ge=1, le=50_000)
    early_stopping_rounds: int = Field(default=100, ge=1, le=5_000)
    min_data_in_leaf: int = Field(default=20, ge=1)
    feature_fraction: float = Field(default=0.9, gt=0.0, le=1.0)
    bagging_fraction: float = Field(default=0.9, gt=0.0, le=1.0)
    lambda_l2: float = Field(default=1.0, ge=0.0)
    class_imbalance: Literal["none", "scale_pos_weight", "is_unbalance"] = "none"
    num_threads: int = Field(default=2, ge=1, le=256)


class RoundReport:
    """A LightGBM callback: each round as progress, and the evaluation logged every `every`
    rounds or `interval` seconds, whichever comes first, but at most once per `min_gap` s."""

    order = 5  # before early stopping, which ends training by raising in its own callback

    def __init__(
        self,
        bar: Progress,
        logger: logging.Logger | logging.LoggerAdapter[Any],
        every: int = 50,
        interval: float = 5.0,
        min_gap: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bar, self.logger, self.clock = bar, logger, clock
        self.every, self.interval, self.min_gap = every, interval, min_gap
        self.logged_round, self.logged_at = 0, clock()
        self.lines = 0

    def __call__(self, env: lgb.callback.CallbackEnv) -> None:
        done = env.iteration + 1 - env.begin_iteration
        self.bar.update(done)
        now = self.clock()
        since = now - self.logged_at
        due = done - self.logged_round >= self.every or since >= self.interval
        if not due or since < self.min_gap:
            return
        scores = ", ".join(f"{e[0]} {e[1]} {e[2]:.5f}" for e in env.evaluation_result_list or [])
        total = env.end_iteration - env.begin_iteration
        self.logger.info("LightGBM round %d/%d: %s", done, total, scores)
        self.logged_round, self.logged_at = done, now
        self.lines += 1


@dataclass(frozen=True)
class TrainedModel:
    model_text: str  # LightGBM's own text format, no pickle
    best_iteration: int
    metrics: dict[str, float]


def lgb_params(
    params: LightGBMParams,
    train_labels: pd.Series,
    seed: int,
    monotone: list[int] | None = None,
) -> dict[str, object]:
    out: dict[str, object] = {
        "objective": "binary",
        "metric": ["auc", "binary_logloss"],
        "num_leaves": params.num_leaves,
        "learning_rate": params.learning_rate,
        "min_data_in_leaf": params.min_data_in_leaf,
        "feature_fraction": params.feature_fraction,
        "bagging_fraction": params.bagging_fraction,
        "bagging_freq": 1 if params.bagging_fraction < 1 else 0,
        "lambda_l2": params.lambda_l2,
        "num_threads": params.num_threads,
        "seed": seed,
        "deterministic": True,
        "force_row_wise": True,
        "verbosity": -1,
    }
    if monotone and any(monotone):
        out["monotone_constraints"] = monotone
    if params.class_imbalance == "scale_pos_weight":
        positives = float(train_labels.sum())
        out["scale_pos_weight"] = (len(train_labels) - positives) / max(positives, 1.0)
    elif params.class_imbalance == "is_unbalance":
        out["is_unbalance"] = True
    return out


def train_lightgbm(
    train: pd.DataFrame,
    valid: pd.DataFrame,
    features: list[str],
    categorical: list[str],
    label: str,
    params: LightGBMParams,
    seed: int,
    monotone: dict[str, int] | None = None,
) -> TrainedModel:
    """Fit with early stopping on `valid` (AUC and log loss; AUC alone when reweighting classes);
    metrics are on `valid` at the best iteration.

    `monotone` maps features to +1 / -1: predictions never fall / rise as they grow.
    """
    cats = [c for c in categorical if c in features]
    # a reweighted model's log loss on the unweighted validation rows worsens from its first
    # round (the weights pull its probabilities up), so stopping on it would keep one tree
    by_auc = params.class_imbalance != "none"
    dtrain = lgb.Dataset(train[features], train[label], categorical_feature=cats)
    dvalid = lgb.Dataset(valid[features], valid[label], reference=dtrain, categorical_feature=cats)
    logger = run_logger(__name__)
    rounds = params.num_boost_round
    with progress(f"LightGBM: up to {rounds} rounds", rounds) as bar:
        booster = lgb.train(
            lgb_params(params, train[label], seed, [(monotone or {}).get(f, 0) for f in features]),
            dtrain,
            num_boost_round=rounds,
            valid_sets=[dvalid],
            valid_names=["valid"],
            callbacks=[
                lgb.early_stopping(
                    params.early_stopping_rounds, first_metric_only=by_auc, verbose=False
                ),
                RoundReport(bar, logger),
            ],
        )
    best = booster.best_iteration or booster.current_iteration()
    scores = booster.best_score["valid"]  # evaluated during training at the best iteration
    logger.info(
        "LightGBM stopped after round %d of %d; best iteration %d: %s",
        booster.current_iteration(),
        rounds,
        best,
        ", ".join(f"valid {name} {value:.5f}" for name, value in scores.items()),
    )
    return TrainedModel(
        model_text=booster.model_to_string(num_iteration=best),
        best_iteration=int(best),
        metrics={
            "valid_auc": float(scores["auc"]),
            "valid_logloss": float(scores["binary_logloss"]),
            "valid_positive_rate": float(valid[label].mean()),
        },
    )
