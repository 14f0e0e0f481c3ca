"""Binary-classifier metrics on labelled rows: overall, calibration and per segment."""

from __future__ import annotations

import itertools
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

from deployments.predictor import LoadedModel
from tasks.specs.dataset_spec import DatasetSpec, SegmentSpec

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
SCORE_EPS = 1e-7  # scores are clipped to [eps, 1 - eps] so that log loss stays finite


class CalibrationBin(BaseModel):
    lower: float
    upper: float
    rows: int
    mean_score: float
    positive_rate: float


def calibration_bins(scores: np.ndarray) -> np.ndarray:
    """Each score's equal-width calibration bin."""
    edges = np.linspace(0.0, 1.0, CALIBRATION_BINS + 1)
    return np.clip(np.digitize(scores, edges[1:-1]), 0, CALIBRATION_BINS - 1)


def calibration(labels: np.ndarray, scores: np.ndarray) -> list[CalibrationBin]:
    """Reliability table over equal-width score bins (empty bins left out)."""
    edges = np.linspace(0.0, 1.0, CALIBRATION_BINS + 1)
    index = calibration_bins(scores)
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
    scores = np.clip(np.asarray(scores, dtype="float64"), SCORE_EPS, 1 - SCORE_EPS)
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


def binary_metrics(labels: np.ndarray, scores: np.ndarray, prefix: str = "") -> dict[str, float]:
    """`metrics` and the positive rate, keyed `<prefix><metric>` (training's valid_/test_)."""
    values = {**metrics(labels, scores), "positive_rate": float(np.mean(labels))}
    return {f"{prefix}{k}": v for k, v in values.items()}


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
    metrics: dict[str, float]  # AUC and PR-AUC NaN with one class


def segment_metrics(
    masks: dict[str, np.ndarray], labels: np.ndarray, scores: np.ndarray
) -> list[SegmentMetrics]:
    """Point metrics in every segment, however small (the gates decide which they judge)."""
    return [
        SegmentMetrics(
            segment=segment,
            rows=int(mask.sum()),
            positives=int(labels[mask].sum()),
            metrics=metrics(labels[mask], scores[mask]),
        )
        for segment, mask in masks.items()
    ]


class Evaluation(BaseModel):
    """A model's metrics on the test set. The labels, its scores and the segment masks stay in
    memory for the paired gates, and out of the evidence (`model_dump` leaves them out)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    version: int
    metrics: dict[str, float]
    segments: list[SegmentMetrics]
    labels: np.ndarray = Field(exclude=True, repr=False)
    scores: np.ndarray = Field(exclude=True, repr=False)
    masks: dict[str, np.ndarray] = Field(exclude=True, repr=False)


def evaluate_scores(
    version: int, labels: np.ndarray, scores: np.ndarray, masks: dict[str, np.ndarray]
) -> Evaluation:
    """Metrics of one model's scores, overall and per segment mask."""
    labels = np.asarray(labels, dtype="float64")
    scores = np.asarray(scores, dtype="float64")
    return Evaluation(
        version=version,
        metrics=metrics(labels, scores),
        segments=segment_metrics(masks, labels, scores),
        labels=labels,
        scores=scores,
        masks=masks,
    )


def evaluate_model(model: LoadedModel, test: pd.DataFrame, spec: DatasetSpec) -> Evaluation:
    """A model's metrics on the test set, overall and in every segment the spec declares."""
    masks = {
        k: m
        for name, seg in spec.validation.segments.items()
        for k, m in segment_masks(test, name, seg).items()
    }
    return evaluate_scores(
        model.version, test[spec.label.column].to_numpy(), model.predict(test), masks
    )
