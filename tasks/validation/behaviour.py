"""Behavioural checks of a model: monotonic in the features the spec says, invariant to others."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel

from deployments.predictor import LoadedModel, Predict
from tasks.specs.dataset_spec import DatasetSpec, InvarianceSpec


class MonotonicResult(BaseModel):
    feature: str
    direction: Literal["increasing", "decreasing"]
    rows: int
    grid: list[float]
    violation_rate: float  # share of rows whose prediction moves against the direction
    worst_move: float


def monotonic_check(
    predict: Predict,
    frame: pd.DataFrame,
    feature: str,
    direction: Literal["increasing", "decreasing"],
    points: int = 8,
) -> MonotonicResult:
    """Sweep `feature` over its observed quantiles for every row; count moves the wrong way."""
    column = frame[feature]
    values = column.to_numpy("float64")
    grid = np.unique(np.nanquantile(values, np.linspace(0, 1, points)))
    if pd.api.types.is_integer_dtype(column.dtype):  # small counts: every value in the range
        low, high = np.nanmin(values), np.nanmax(values)
        grid = np.arange(low, high + 1) if high - low <= 4 * points else np.unique(np.round(grid))
    sweeps = np.column_stack(
        [predict(frame.assign(**{feature: column.dtype.type(v)})) for v in grid]
    )
    moves = np.diff(sweeps, axis=1) * (1 if direction == "increasing" else -1)
    wrong = (moves < -1e-9).any(axis=1) if moves.size else np.zeros(len(frame), bool)
    return MonotonicResult(
        feature=feature,
        direction=direction,
        rows=len(frame),
        grid=[float(v) for v in grid],
        violation_rate=float(wrong.mean()),
        worst_move=float(-moves.min()) if moves.size and moves.min() < 0 else 0.0,
    )


class InvarianceResult(BaseModel):
    features: list[str]
    perturbation: str
    rows: int
    mean_abs_change: float
    max_abs_change: float


def invariance_check(
    predict: Predict, frame: pd.DataFrame, spec: InvarianceSpec, seed: int
) -> InvarianceResult:
    """How far predictions move when features the label should not depend on are perturbed."""
    rng = np.random.default_rng(seed)
    perturbed = frame.copy()
    if spec.perturbation == "shuffle":
        order = rng.permutation(len(frame))
        for f in spec.features:
            perturbed[f] = frame[f].to_numpy()[order]
    else:
        for f in spec.features:
            noise = 1 + spec.scale * rng.standard_normal(len(frame))
            perturbed[f] = (frame[f].astype("float64") * noise).astype(frame[f].dtype)
    change = np.abs(predict(perturbed) - predict(frame))
    return InvarianceResult(
        features=list(spec.features),
        perturbation=spec.perturbation,
        rows=len(frame),
        mean_abs_change=float(change.mean()),
        max_abs_change=float(change.max()),
    )


def behaviour_checks(
    model: LoadedModel, test: pd.DataFrame, spec: DatasetSpec, rows: int, seed: int
) -> tuple[list[MonotonicResult], list[InvarianceResult]]:
    """The spec's monotonic and invariance checks on a sample of `rows` test rows."""
    sample = test.sample(min(rows, len(test)), random_state=seed)
    v = spec.validation
    return (
        [monotonic_check(model.predict, sample, f, d) for f, d in v.monotonic.items()],
        [invariance_check(model.predict, sample, c, seed) for c in v.invariance],
    )
