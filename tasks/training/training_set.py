"""Training sets: the labelled rows with their point-in-time features, checks that fail before
any training starts, and the time-based split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from tasks.feature_store.store import (
    StoreSettings,
    fingerprint,
    labelled_set,
    open_store,
    service_features,
)
from tasks.specs.dataset_spec import DatasetSpec


class TrainingDataError(ValueError):
    """A training set no model should be trained on; the message names the problem."""


@dataclass(frozen=True)
class LabelledSet:
    """A feature service's training set: rows, its feature columns, and the feature set's
    fingerprint at the time it was read."""

    frame: pd.DataFrame
    features: list[str]
    categorical: list[str]
    fingerprint: str


def load_labelled_set(
    spec: DatasetSpec, labels_uri: str, settings: StoreSettings, service: str
) -> LabelledSet:
    """data_prep's labelled rows at `labels_uri` with the service's features, point in time."""
    labels = pd.read_parquet(labels_uri)
    store = open_store(settings)
    features, categorical = service_features(store, spec, service)
    frame = labelled_set(store, spec, labels, service)
    return LabelledSet(frame, features, categorical, fingerprint(store, service))


@dataclass(frozen=True)
class Split:
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame


def check_training_set(frame: pd.DataFrame, features: list[str], label: str) -> None:
    """Empty set, missing features or label, NaN labels, one class: each is an error."""
    if frame.empty:
        raise TrainingDataError("the training set is empty")
    missing = [c for c in [*features, label] if c not in frame.columns]
    if missing:
        raise TrainingDataError(f"the training set lacks column(s) {missing}")
    labels = frame[label]
    if labels.isna().any():
        raise TrainingDataError(f"label '{label}' has {int(labels.isna().sum())} NaN value(s)")
    classes = labels.unique()
    if len(classes) < 2:
        raise TrainingDataError(f"label '{label}' has a single class ({classes[0]!r})")
    all_null = [c for c in features if frame[c].isna().all()]
    if all_null:
        raise TrainingDataError(f"feature(s) {all_null} are null in every row")


def time_split(
    frame: pd.DataFrame, timestamp: str, valid: float = 0.15, test: float = 0.15
) -> Split:
    """Oldest rows train, the next `valid` share validates, the newest `test` share tests."""
    if not 0 < valid < 1 or not 0 < test < 1 or valid + test >= 1:
        raise ValueError("valid and test shares must be in (0, 1) and sum to under 1")
    ordered = frame.sort_values(timestamp, kind="stable").reset_index(drop=True)
    n = len(ordered)
    cut_valid, cut_test = int(np.floor(n * (1 - valid - test))), int(np.floor(n * (1 - test)))
    split = Split(
        ordered.iloc[:cut_valid], ordered.iloc[cut_valid:cut_test], ordered.iloc[cut_test:]
    )
    for name in ("train", "valid", "test"):
        if getattr(split, name).empty:
            raise TrainingDataError(f"the {name} split is empty ({n} rows in all)")
    return split
