"""Model evaluation on a labelled test set: metrics, calibration, segments and behaviour."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

from tasks.specs.dataset_spec import InvarianceSpec, SegmentSpec

Predict = Callable[[pd.DataFrame], np.ndarray]
HigherMetric = Literal["auc", "pr_auc"]
LowerMetric = Literal["logloss", "brier", "ece"]
Metric = Literal["auc", "pr_auc", "logloss", "brier", "ece"]
HIGHER_IS_BETTER: dict[str, bool] = {
    "auc": True,
    "pr_auc": True,
    "logloss": False,
    "brier": False,
    "ece": False,
}
CALIBRATION_BINS = 10


class CalibrationBin(BaseModel):
    lower: float
    upper: float
    rows: int
    mean_score: float
    positive_rate: float


def calibration(labels: np.ndarray, scores: np.ndarray) -> list[CalibrationBin]:
    """Reliability table over equal-width score bins (empty bins left out)."""
    edges = np.linspace(0.0, 1.0, CALIBRATION_BINS + 1)
    index = np.clip(np.digitize(scores, edges[1:-1]), 0, CALIBRATION_BINS - 1)
    out = []
    for b in range(CALIBRATION_BINS):
        mask = index == b
        if mask.any():
            out.append(
                CalibrationBin(
                    lower=float(edges[b]),
                    upper=float(edges[b + 1]),
                    rows=int(mask.sum()),
                    mean_score=float(scores[mask].mean()),
                    positive_rate=float(labels[mask].mean()),
                )
            )
    return out


def metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """AUC, PR-AUC, log loss, Brier and expected calibration error (AUCs NaN with one class)."""
    labels = np.asarray(labels, dtype="float64")
    scores = np.clip(np.asarray(scores, dtype="float64"), 1e-7, 1 - 1e-7)
    both = 0 < labels.sum() < len(labels)
    table = calibration(labels, scores)
    ece = sum(b.rows * abs(b.mean_score - b.positive_rate) for b in table) / len(labels)
    return {
        "auc": float(roc_auc_score(labels, scores)) if both else float("nan"),
        "pr_auc": float(average_precision_score(labels, scores)) if both else float("nan"),
        "logloss": float(log_loss(labels, scores, labels=[0.0, 1.0])),
        "brier": float(brier_score_loss(labels, scores)),
        "ece": float(ece),
    }


def segment_masks(frame: pd.DataFrame, name: str, spec: SegmentSpec) -> dict[str, np.ndarray]:
    """Row masks per value of one segment, keyed `<segment>=<value>`."""
    values = frame[spec.feature]
    if spec.bins:
        edges = [*spec.bins, np.inf]
        bands = pd.cut(values, bins=edges, right=False)
        names = [
            f"[{lo:g}, {hi:g})" if np.isfinite(hi) else f">= {lo:g}"
            for lo, hi in itertools.pairwise(edges)
        ]
        groups = {n: (bands.cat.codes == i).to_numpy() for i, n in enumerate(names)}
    else:
        groups = {
            spec.labels.get(int(v), str(v)) if float(v).is_integer() else str(v): (
                values == v
            ).to_numpy()
            for v in sorted(values.dropna().unique())
        }
    groups["missing"] = values.isna().to_numpy()
    return {f"{name}={value}": mask for value, mask in groups.items() if mask.any()}


class SegmentMetrics(BaseModel):
    segment: str
    rows: int
    positives: int
    metrics: dict[str, float] | None  # None: too few rows or one class


def segment_metrics(
    masks: dict[str, np.ndarray], labels: np.ndarray, scores: np.ndarray, min_rows: int
) -> list[SegmentMetrics]:
    out = []
    for segment, mask in masks.items():
        y = labels[mask]
        positives = int(y.sum())
        scorable = len(y) >= min_rows and 0 < positives < len(y)
        out.append(
            SegmentMetrics(
                segment=segment,
                rows=len(y),
                positives=positives,
                metrics=metrics(y, scores[mask]) if scorable else None,
            )
        )
    return out


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
