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

from tasks.train_lightgbm import LightGBMParams, predict, train_lightgbm
from tasks.train_torch import TorchParams, predict_torch, train_torch
from tasks.training_data import Split

Trainer = Literal["lightgbm", "torch"]


@dataclass(frozen=True)
class Fitted:
    files: dict[str, bytes]  # what the registry stores for this model
    metrics: dict[str, float]
    predict: Callable[[pd.DataFrame], np.ndarray]
    details: dict[str, Any] = field(default_factory=dict)


def fit_lightgbm(
    split: Split,
    features: list[str],
    categorical: list[str],
    label: str,
    params: BaseModel,
    seed: int,
) -> Fitted:
    assert isinstance(params, LightGBMParams)
    trained = train_lightgbm(split.train, split.valid, features, categorical, label, params, seed)
    return Fitted(
        files={"model.txt": trained.model_text.encode()},
        metrics=trained.metrics,
        predict=lambda frame: predict(trained.model_text, frame, features),
        details={"best_iteration": trained.best_iteration},
    )


def fit_torch(
    split: Split,
    features: list[str],
    categorical: list[str],
    label: str,
    params: BaseModel,
    seed: int,
) -> Fitted:
    assert isinstance(params, TorchParams)
    trained = train_torch(split.train, split.valid, features, categorical, label, params, seed)
    return Fitted(
        files={"model.pt": trained.state_dict, "model.json": json.dumps(trained.config).encode()},
        metrics=trained.metrics,
        predict=lambda frame: predict_torch(trained.state_dict, trained.config, frame),
        details={"backend": params.backend, "processes": params.processes},
    )


TRAINERS: dict[str, Callable[..., Fitted]] = {"lightgbm": fit_lightgbm, "torch": fit_torch}


def fit(
    trainer: Trainer,
    split: Split,
    features: list[str],
    categorical: list[str],
    label: str,
    params: BaseModel,
    seed: int,
) -> Fitted:
    return TRAINERS[trainer](split, features, categorical, label, params, seed)


fit_task = task(name="train", cache_policy=NO_CACHE, task_run_name="train-{trainer}")(fit)
