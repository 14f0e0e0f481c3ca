"""The trainers behind one interface: what the training flow dispatches on."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from tasks.training.lightgbm_trainer import LightGBMParams, predict, train_lightgbm
from tasks.training.torch_trainer import TorchParams, torch_predictor, train_torch
from tasks.training.training_set import Split

Trainer = Literal["lightgbm", "torch"]


@dataclass(frozen=True)
class Fitted:
    files: dict[str, bytes]  # what the registry stores for this model
    metrics: dict[str, float]
    predict: Callable[[pd.DataFrame], np.ndarray]
    details: dict[str, Any] = field(default_factory=dict)


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
        predict=lambda frame: predict(trained.model_text, frame, features),
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


fit_task = task(name="train", cache_policy=NO_CACHE, task_run_name="train-{trainer}")(fit)
