"""Calibration maps from a model's scores to probabilities: stored as plain JSON, applied with
numpy alone (the platform fits them, tasks/training/calibration.py).

A version's `calibration.json` holds one of

    {"method": "platt", "a": 0.98, "b": -2.31}      p = sigmoid(a * logit(s) + b)
    {"method": "isotonic", "x": [...], "y": [...]}  p = linear interpolation of s between the
                                                    breakpoints, flat past either end
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

CALIBRATION = "calibration.json"
EPS = 1e-12  # scores of exactly 0 or 1 keep a finite logit


def logit(scores: np.ndarray) -> np.ndarray:
    s = np.clip(np.asarray(scores, dtype="float64"), EPS, 1.0 - EPS)
    return np.asarray(np.log(s) - np.log1p(-s))


def sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(z, -500.0, 500.0))))


def calibration_map(spec: Mapping[str, Any]) -> Callable[[np.ndarray], np.ndarray]:
    """The function a stored calibration describes; ValueError if it is malformed."""
    method = spec.get("method")
    if method == "platt":
        a, b = float(spec["a"]), float(spec["b"])
        return lambda scores: sigmoid(a * logit(scores) + b)
    if method == "isotonic":
        x, y = np.asarray(spec["x"], dtype="float64"), np.asarray(spec["y"], dtype="float64")
        if x.ndim != 1 or x.shape != y.shape or not len(x) or (np.diff(x) < 0).any():
            raise ValueError("isotonic calibration needs x and y of one length, x increasing")
        return lambda scores: np.interp(np.asarray(scores, dtype="float64"), x, y)
    raise ValueError(f"unknown calibration method {method!r} (known: platt, isotonic)")
