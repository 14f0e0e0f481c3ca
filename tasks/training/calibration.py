"""Calibration: a step after any trainer, fitted on the validation split and stored as JSON.

The map is fitted here (scipy, scikit-learn) and applied by deployments/calibration.py (numpy),
so every process that loads the version (validation, serving, batch scoring) applies the same.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy.optimize import brentq, minimize
from sklearn.isotonic import IsotonicRegression

from deployments.calibration import CALIBRATION, logit, sigmoid
from deployments.predictor import calibrated
from tasks.training.trainers import Fitted
from tasks.training.training_set import TrainingDataError

Calibration = Literal["platt", "isotonic", "none"]


def fit_platt(scores: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """p = sigmoid(a * logit(score) + b), by maximum likelihood against Platt's targets.

    Reweighting positives by w moves every log-odds by about log(w): a = 1, b = -log(w) undoes it.
    """
    z, y = logit(scores), np.asarray(labels, dtype="float64")
    positives, negatives = y.sum(), len(y) - y.sum()
    # Platt (1999): targets just off 0 and 1, so a small validation split cannot push a to infinity
    t = np.where(y > 0, (positives + 1) / (positives + 2), 1 / (negatives + 2))

    def loss(ab: np.ndarray) -> tuple[float, np.ndarray]:
        s = ab[0] * z + ab[1]
        residual = sigmoid(s) - t
        return float(np.sum(np.logaddexp(0.0, s) - t * s)), np.array(
            [np.sum(residual * z), np.sum(residual)]
        )

    a, b = (float(v) for v in minimize(loss, np.array([1.0, 0.0]), jac=True, method="BFGS").x)
    if a <= 0:  # the scores do not rank the validation rows: keep their order, shift them only
        a, b = 1.0, float(brentq(lambda c: float(np.sum(sigmoid(z + c) - t)), -50.0, 50.0))
    return {"method": "platt", "a": a, "b": b}


def fit_isotonic(scores: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """The non-decreasing step fit of the labels on the scores, as its breakpoints."""
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
    iso.fit(np.asarray(scores, dtype="float64"), np.asarray(labels, dtype="float64"))
    return {
        "method": "isotonic",
        "x": [float(v) for v in iso.X_thresholds_],
        "y": [float(v) for v in iso.y_thresholds_],
    }


FITTERS = {"platt": fit_platt, "isotonic": fit_isotonic}


def calibrate(fitted: Fitted, valid: pd.DataFrame, label: str, method: Calibration) -> Fitted:
    """`fitted` with a calibration map fitted on `valid`: its files gain `calibration.json`, its
    `predict` is calibrated, `uncalibrated` keeps the model's own scores. "none" changes nothing
    but the record in `details`."""
    if method == "none":
        return replace(fitted, details={**fitted.details, "calibration": {"method": "none"}})
    labels = valid[label].to_numpy()
    positives = int(labels.sum())
    if not 0 < positives < len(labels):
        raise TrainingDataError(
            f"calibration needs both classes in the validation split ({len(labels)} rows, "
            f"{positives} positive): use a larger valid_share or calibration 'none'"
        )
    spec = FITTERS[method](fitted.predict(valid), labels)
    stored = json.dumps(spec).encode()
    return replace(
        fitted,
        files={**fitted.files, CALIBRATION: stored},
        predict=calibrated(fitted.predict, json.loads(stored)),  # exactly what a load applies
        uncalibrated=fitted.predict,
        details={
            **fitted.details,
            "calibration": {"method": method, "file": CALIBRATION, "valid_rows": len(labels)},
        },
    )
