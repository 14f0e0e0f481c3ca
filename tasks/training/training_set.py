"""Training sets: the labelled rows with their point-in-time features, checks that fail before
any training starts, and the time-based split."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tasks.data.publish import LABELS, absolute_uri, features_uri
from tasks.feature_store.store import (
    StoreSettings,
    feature_set,
    labelled_set,
    service_features,
    snapshot_store,
    stored_features,
)
from tasks.specs.dataset_spec import DatasetSpec


class TrainingDataError(ValueError):
    """A training set no model should be trained on; the message names the problem."""


@dataclass(frozen=True)
class LabelledSet:
    """A feature service's training set: rows, its feature columns, the feature set's
    fingerprint and per-view digests when it was read, and the data snapshot it came from."""

    frame: pd.DataFrame
    features: list[str]
    categorical: list[str]
    fingerprint: str
    view_digests: dict[str, str]
    snapshot: str | None
    stored_views: dict[str, list[str]] = field(default_factory=dict)  # view -> its features
    project: str = "mlops"  # the Feast project of the online store's tables


def load_labelled_set(
    spec: DatasetSpec, data_uri: str, settings: StoreSettings, service: str
) -> LabelledSet:
    """data_prep's labelled rows with the service's features, point in time, all from the
    snapshot published when the read began."""
    store, snapshot = snapshot_store(settings, data_uri)
    labels = pd.read_parquet(f"{features_uri(absolute_uri(data_uri), snapshot)}/{LABELS}")
    features, categorical = service_features(store, spec, service)
    frame = labelled_set(store, spec, labels, service)
    fingerprint, views = feature_set(store, service)
    stored = stored_features(store, service)
    return LabelledSet(
        frame, features, categorical, fingerprint, views, snapshot, stored, store.project
    )


@dataclass(frozen=True)
class Split:
    """Train, valid and test rows cut by time, and where the cuts fell (ISO times, rows left
    out and why): what the registered version records."""

    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    cuts: dict[str, Any] = field(default_factory=dict)


def outcome_known(
    frame: pd.DataFrame, timestamp: str, label: str, horizon_days: int
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The rows whose outcome is known: a label, and an outcome window (`horizon_days` after
    the event) closed by the data's end, the newest event of the frame. Returns them and
    the counts of rows left out."""
    ts = pd.to_datetime(frame[timestamp], utc=True)
    end = ts.max()
    unknown = frame[label].isna().to_numpy()
    open_window = (ts + pd.Timedelta(days=horizon_days) > end).to_numpy() & ~unknown
    known = frame[~unknown & ~open_window].reset_index(drop=True)
    summary = {
        "data_end": None if frame.empty else end.isoformat(),
        "horizon_days": horizon_days,
        "left_out_unknown_label": int(unknown.sum()),
        "left_out_open_outcome": int(open_window.sum()),
    }
    return known, summary


def check_training_set(frame: pd.DataFrame, features: list[str], label: str) -> None:
    """Empty set, missing features or label, NaN labels, one class: each is an error."""
    if frame.empty:
        raise TrainingDataError("the training set is empty (no row with a known outcome)")
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


def _cut(times: np.ndarray, share: float, n: int) -> np.datetime64:
    """The timestamp from which the newest ~`share` x `n` of sorted `times` lie (a whole group
    of equal timestamps on one side)."""
    return times[min(len(times) - 1, max(0, len(times) - round(share * n)))]


def time_split(
    frame: pd.DataFrame,
    timestamp: str,
    valid: float = 0.15,
    test: float = 0.15,
    embargo_days: float = 0.0,
) -> Split:
    """Oldest rows train, the next `valid` share validates, the newest `test` share tests.

    Cuts fall between timestamps, never inside a group of equal ones, and `embargo_days` of
    rows before each cut are left out, so no earlier row's outcome window (the label horizon)
    reaches into the next split's period.
    """
    if not 0 < valid < 1 or not 0 < test < 1 or valid + test >= 1:
        raise ValueError("valid and test shares must be in (0, 1) and sum to under 1")
    ordered = frame.sort_values(timestamp, kind="stable").reset_index(drop=True)
    ts = pd.to_datetime(ordered[timestamp], utc=True)
    times = ts.to_numpy("datetime64[ns]")
    n, gap = len(ordered), np.timedelta64(int(embargo_days * 86_400 * 10**9), "ns")
    if n == 0:
        raise TrainingDataError("the training set is empty (no row with a known outcome)")
    test_from = _cut(times, test, n)
    before_test = times < test_from - gap
    valid_from = _cut(times[before_test], valid, n) if before_test.any() else test_from
    in_valid = before_test & (times >= valid_from)
    in_train = times < valid_from - gap
    split = Split(
        ordered[in_train].reset_index(drop=True),
        ordered[in_valid].reset_index(drop=True),
        ordered[times >= test_from].reset_index(drop=True),
    )
    for name in ("train", "valid", "test"):
        if getattr(split, name).empty:
            raise TrainingDataError(
                f"the {name} split is empty ({n} rows in all, {embargo_days:g}-day embargo "
                "between splits): too little history for the label horizon"
            )
    cuts = {
        "train_to": split.train[timestamp].max().isoformat(),
        "valid_from": split.valid[timestamp].min().isoformat(),
        "valid_to": split.valid[timestamp].max().isoformat(),
        "test_from": split.test[timestamp].min().isoformat(),
        "embargo_days": embargo_days,
        "left_out_embargo": int(n - in_train.sum() - in_valid.sum() - len(split.test)),
    }
    return Split(split.train, split.valid, split.test, cuts)


def split_labelled_set(
    data: LabelledSet,
    spec: DatasetSpec,
    valid: float,
    test: float,
    embargo_days: float | None = None,
) -> Split:
    """Leave out rows whose outcome is not known yet (counted), check what is left, and split
    it by time with an embargo of at least the label's horizon (the default)."""
    horizon = spec.label.horizon_days
    embargo = horizon if embargo_days is None else embargo_days
    if embargo < horizon:
        raise TrainingDataError(
            f"embargo_days {embargo:g} is shorter than the label horizon ({horizon} days): "
            "training labels would overlap the evaluation period"
        )
    known, summary = outcome_known(data.frame, spec.timestamp_field, spec.label.column, horizon)
    check_training_set(known, data.features, spec.label.column)
    split = time_split(known, spec.timestamp_field, valid, test, embargo)
    return Split(split.train, split.valid, split.test, {**summary, **split.cuts})
