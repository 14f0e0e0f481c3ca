"""The held-out test set: labelled rows newer than the models' training data, Feast features."""

from __future__ import annotations

from typing import Any

import fsspec
import pandas as pd
from feast import FeatureStore

from tasks.specs.dataset_spec import DatasetSpec
from tasks.feature_store.store import labelled_set


class HoldoutError(ValueError):
    """A test set that cannot be evaluated on; the message names the file and column."""


def read_labels(uri: str, spec: DatasetSpec) -> pd.DataFrame:
    """Labelled entity rows (join keys, timestamp, label) from Parquet at `uri`."""
    fs, path = fsspec.core.url_to_fs(uri)
    if not fs.exists(path):
        raise HoldoutError(f"{uri}: no labelled rows there (run data_prep, or pass labels_uri)")
    frame = pd.read_parquet(uri)
    label = spec.label.column
    for what, column in (("label", label), ("timestamp", spec.timestamp_field)):
        if column not in frame.columns:
            raise HoldoutError(f"{uri}: the test set has no {what} column '{column}'")
    frame = frame.dropna(subset=[label])
    if frame.empty:
        raise HoldoutError(f"{uri}: no row has a value in label column '{label}'")
    return frame


def trained_to(metadata: dict[str, Any]) -> pd.Timestamp:
    """The newest row a version saw while training (train or early-stopping validation)."""
    data = metadata.get("data", {})
    ends = [pd.Timestamp(data[p]["to"]) for p in ("train", "valid") if p in data]
    if not ends:
        raise HoldoutError("the version's metadata has no training data range ('data')")
    return max(ends)


def holdout(
    store: FeatureStore,
    spec: DatasetSpec,
    labels: pd.DataFrame,
    services: list[str],
    after: pd.Timestamp,
) -> pd.DataFrame:
    """Rows stamped after `after`, with every service's features (point in time)."""
    ts = pd.to_datetime(labels[spec.timestamp_field], utc=True)
    rows = labels[ts > after].reset_index(drop=True)
    if rows.empty:
        raise HoldoutError(f"no labelled row is later than {after.isoformat()}: nothing to test on")
    frame = labelled_set(store, spec, rows, services[0])
    for service in services[1:]:  # the champion may read another feature service
        more = labelled_set(store, spec, rows, service)
        frame = pd.concat([frame, more[[c for c in more if c not in frame]]], axis=1)
    return frame
