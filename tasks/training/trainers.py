"""The trainers behind one interface: what the training flow dispatches on."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from deployments.predictor import Predict, lightgbm_predictor
from deployments.torch_mlp import torch_predictor
from tasks.training.lightgbm_trainer import LightGBMParams, train_lightgbm
from tasks.training.torch_trainer import TorchParams, train_torch
from tasks.training.training_set import Split

Trainer = Literal["lightgbm", "torch"]


@dataclass(frozen=True)
class Fitted:
    files: dict[str, bytes]  # what the registry stores for this model
    metrics: dict[str, float]
    predict: Predict  # as a version loaded from `files` predicts
    details: dict[str, Any] = field(default_factory=dict)
    uncalibrated: Predict | None = None  # the model's own scores, once `predict` is calibrated


@dataclass(frozen=True)
class TrainingInputs:
    """What every trainer fits on: the split, the feature columns and the label."""

    split: Split
    features: list[str]
    categorical: list[str]
    label: str
    seed: int
    monotone: dict[str, int] = field(default_factory=dict)  # feature -> +1 / -1


def fit_lightgbm(data: TrainingInputs, params: BaseModel) -> Fitted:
    assert isinstance(params, LightGBMParams)
    s, features = data.split, data.features
    trained = train_lightgbm(
        s.train, s.valid, features, data.categorical, data.label, params, data.seed, data.monotone
    )
    return Fitted(
        files={"model.txt": trained.model_text.encode()},
        metrics=trained.metrics,
        predict=lightgbm_predictor(trained.model_text, features),
        details={"best_iteration": trained.best_iteration, "monotone": data.monotone},
    )


def fit_torch(data: TrainingInputs, params: BaseModel) -> Fitted:
    assert isinstance(params, TorchParams)
    s = data.split
    trained = train_torch(
        s.train, s.valid, data.features, data.categorical, data.label, params, data.seed
    )
    return Fitted(
        files={"model.pt": trained.state_dict, "model.json": json.dumps(trained.config).encode()},
        metrics=trained.metrics,
        predict=torch_predictor(trained.state_dict, trained.config),
        details={"backend": params.backend, "processes": params.processes},
    )


TRAINERS: dict[str, Callable[[TrainingInputs, BaseModel], Fitted]] = {
    "lightgbm": fit_lightgbm,
    "torch": fit_torch,
}


def fit(trainer: Trainer, data: TrainingInputs, params: BaseModel) -> Fitted:
    return TRAINERS[trainer](data, params)
