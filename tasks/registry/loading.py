"""Registered versions loaded back as predictors: the model file is data, read by its trainer."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from tasks.registry.store import Registry
from tasks.training.torch_trainer import torch_predictor

Predict = Callable[[pd.DataFrame], np.ndarray]
REFERENCE = "reference.parquet"  # a sample of training rows: features and label


class ModelLoadError(ValueError):
    """A registered version whose model cannot be loaded; names the model, version and file."""


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: int
    features: list[str]
    metadata: dict[str, Any]
    predict: Predict  # feature frame -> probability of the positive class


def _lightgbm(files: dict[str, bytes], features: list[str]) -> Predict:
    booster = lgb.Booster(model_str=files["model.txt"].decode())
    return lambda frame: np.asarray(booster.predict(frame[features]), dtype="float64")


def _torch(files: dict[str, bytes], features: list[str]) -> Predict:
    return torch_predictor(files["model.pt"], json.loads(files["model.json"]))


LOADERS: dict[str, tuple[tuple[str, ...], Callable[[dict[str, bytes], list[str]], Predict]]] = {
    "lightgbm": (("model.txt",), _lightgbm),
    "torch": (("model.pt", "model.json"), _torch),
}


def load_model(registry: Registry, name: str, ref: int | str) -> LoadedModel:
    """Load a version (number or alias); RegistryError if it does not exist."""
    version = registry.get(name, ref)
    where = f"model '{name}' v{version.version}"
    trainer = version.metadata.get("trainer")
    if trainer not in LOADERS:
        raise ModelLoadError(f"{where}: unknown trainer {trainer!r} (known: {sorted(LOADERS)})")
    names, build = LOADERS[trainer]
    try:
        features = list(
            json.loads(registry.read(name, version.version, "features.json"))["features"]
        )
    except Exception as exc:
        raise ModelLoadError(f"{where}: cannot load features.json: {exc}") from exc
    try:  # any parse error of a stored model file is a load failure
        predict = build({f: registry.read(name, version.version, f) for f in names}, features)
    except Exception as exc:
        raise ModelLoadError(f"{where}: cannot load {', '.join(names)}: {exc}") from exc
    return LoadedModel(name, version.version, features, version.metadata, predict)
