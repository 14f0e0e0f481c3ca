"""A registry version loaded as a predictor: its model files are data, read by their trainer's
loader (LightGBM's text model; a torch state_dict read with `weights_only=True`), and its
calibration map (`calibration.json`, deployments/calibration.py) applied to every score.

`load_version` reads a version straight from a local registry folder (the layout of
tasks/registry/store.py), as a serving process does; the platform reads through its Registry.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from deployments.calibration import CALIBRATION, calibration_map

Predict = Callable[[pd.DataFrame], np.ndarray]  # feature frame -> P(positive class)
Matrix = Callable[[np.ndarray], np.ndarray]  # float64 rows in the version's feature order -> P
REFERENCE = "reference.parquet"  # a sample of training rows: features and label
FEATURES = "features.json"
MODEL_FILES: dict[str, tuple[str, ...]] = {
    "lightgbm": ("model.txt",),
    "torch": ("model.pt", "model.json"),
}


class ModelLoadError(ValueError):
    """A version whose model cannot be loaded; names the model, version and file."""


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: int
    features: list[str]
    metadata: dict[str, Any]
    predict: Predict
    predict_matrix: Matrix | None = None  # the same scores without a frame (the model server)


def lightgbm_predictor(model_text: str, features: list[str]) -> Predict:
    return lightgbm_predictors(model_text, features)[0]


def lightgbm_predictors(model_text: str, features: list[str]) -> tuple[Predict, Matrix | None]:
    """A frame predictor and, unless the model maps pandas categories, a matrix one."""
    booster = lgb.Booster(model_str=model_text)
    if booster.pandas_categorical:  # trained on pandas categories: LightGBM maps the frame's
        return lambda frame: np.asarray(booster.predict(frame[features]), dtype="float64"), None

    def matrix(values: np.ndarray) -> np.ndarray:
        return np.asarray(booster.predict(values), dtype="float64")

    # LightGBM reads a frame as this float64 array anyway, after 0.15 ms of checks per call
    return lambda frame: matrix(frame[features].to_numpy(dtype="float64")), matrix


def _torch(files: Mapping[str, bytes], features: list[str]) -> tuple[Predict, Matrix | None]:
    from deployments.torch_mlp import torch_predictor  # torch loads only for torch models

    return torch_predictor(files["model.pt"], json.loads(files["model.json"])), None


BUILDERS: dict[str, Callable[[Mapping[str, bytes], list[str]], tuple[Predict, Matrix | None]]] = {
    "lightgbm": lambda files, features: lightgbm_predictors(files["model.txt"].decode(), features),
    "torch": _torch,
}


def loaded_model(
    name: str,
    version: int,
    metadata: dict[str, Any],
    files: Collection[str],
    read: Callable[[str], bytes],
) -> LoadedModel:
    """Build the predictor of a version whose files are `files`, read by `read(file)`.

    A version holding `calibration.json` predicts calibrated probabilities; one without it
    (registered before calibration existed, or trained with `calibration="none"`) predicts the
    model's own scores, uncalibrated.
    """
    where = f"model '{name}' v{version}"
    trainer = metadata.get("trainer")
    if trainer not in BUILDERS:
        raise ModelLoadError(f"{where}: unknown trainer {trainer!r} (known: {sorted(BUILDERS)})")
    try:
        features = list(json.loads(read(FEATURES))["features"])
    except Exception as exc:
        raise ModelLoadError(f"{where}: cannot load {FEATURES}: {exc}") from exc
    names = MODEL_FILES[trainer]
    try:  # any parse error of a stored model file is a load failure
        predict, matrix = BUILDERS[trainer]({f: read(f) for f in names}, features)
    except Exception as exc:
        raise ModelLoadError(f"{where}: cannot load {', '.join(names)}: {exc}") from exc
    if CALIBRATION in files:
        try:
            apply = calibration_map(json.loads(read(CALIBRATION)))
        except Exception as exc:
            raise ModelLoadError(f"{where}: cannot load {CALIBRATION}: {exc}") from exc
        predict = _then(predict, apply)
        matrix = _then(matrix, apply) if matrix else None
    return LoadedModel(name, version, features, metadata, predict, matrix)


def calibrated(predict: Predict, spec: Mapping[str, Any]) -> Predict:
    """`predict` followed by the calibration map `spec` describes."""
    return _then(predict, calibration_map(spec))  # type: ignore[no-any-return]


def _then(first: Callable[[Any], np.ndarray], then: Callable[[np.ndarray], np.ndarray]) -> Any:
    return lambda data: then(first(data))


def load_version(root: str | Path, name: str, ref: int | str) -> LoadedModel:
    """A version (number or alias) from a local registry folder (calibrated as `loaded_model`)."""
    base = Path(root) / name
    if isinstance(ref, int) or str(ref).isdigit():
        number = int(ref)
    else:
        alias = base / "aliases" / str(ref)
        if not alias.is_file():
            raise ModelLoadError(f"model '{name}' has no alias '{ref}' under {root}")
        number = int(alias.read_text().strip())
    folder = base / "versions" / str(number)
    if not (folder / "metadata.json").is_file():
        raise ModelLoadError(f"model '{name}' has no version {number} under {root}")
    return load_folder(folder)


def load_folder(folder: str | Path) -> LoadedModel:
    """The version stored in `folder` (a registry version folder, or its copy in a container)."""
    path = Path(folder)
    try:
        info = json.loads((path / "metadata.json").read_text())
        name, number = str(info["name"]), int(info["version"])
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"{path}: not a registry version folder ({exc})") from exc
    return loaded_model(
        name, number, info["metadata"], info["files"], lambda f: (path / f).read_bytes()
    )
