"""The held-out test set: labelled rows newer than the models' training data, Feast features."""

from __future__ import annotations

from typing import Any

import fsspec
import pandas as pd
from feast import FeatureStore

from deployments.predictor import LoadedModel
from tasks.data.publish import LABELS, absolute_uri, features_uri
from tasks.feature_store.store import (
    StoreSettings,
    feature_set,
    labelled_set,
    snapshot_store,
)
from tasks.specs.dataset_spec import DatasetSpec
from tasks.training.training_set import outcome_known
from tasks.validation.gates import DataEvidence


class HoldoutError(ValueError):
    """A test set that cannot be evaluated on; the message names the file and column."""


def read_labels(uri: str, spec: DatasetSpec) -> pd.DataFrame:
    """Labelled entity rows (join keys, timestamp, label) from Parquet at `uri`; rows whose
    label is not known yet stay: they still mark how far the data reaches."""
    fs, path = fsspec.core.url_to_fs(uri)
    if not fs.exists(path):
        raise HoldoutError(f"{uri}: no labelled rows there (run data_prep, or pass labels_uri)")
    frame = pd.read_parquet(uri)
    label = spec.label.column
    for what, column in (("label", label), ("timestamp", spec.timestamp_field)):
        if column not in frame.columns:
            raise HoldoutError(f"{uri}: the test set has no {what} column '{column}'")
    if frame[label].isna().all():
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


def test_set(
    spec: DatasetSpec,
    data_uri: str,
    labels_uri: str | None,
    models: list[LoadedModel],
    settings: StoreSettings,
    test_from: pd.Timestamp | None = None,
) -> tuple[pd.DataFrame, DataEvidence]:
    """The labelled rows after every model's training data plus the label horizon (or after
    `test_from`), whose outcome is known, with their features from the snapshot published now;
    and the data evidence the gates judge (the candidate is `models[0]`)."""
    store, snapshot = snapshot_store(settings, data_uri)
    uri = labels_uri or f"{features_uri(absolute_uri(data_uri), snapshot)}/{LABELS}"
    horizon = spec.label.horizon_days
    labels, known = outcome_known(
        read_labels(uri, spec), spec.timestamp_field, spec.label.column, horizon
    )
    seen = max(trained_to(m.metadata) for m in models)
    after = test_from if test_from is not None else seen + pd.Timedelta(days=horizon)
    services = list(dict.fromkeys(m.metadata["feature_service"] for m in models))
    frame = holdout(store, spec, labels, services, after)
    candidate = models[0]
    service = candidate.metadata["feature_service"]
    nulls = frame[candidate.features].isna().mean()
    fingerprint_now, views_now = feature_set(store, service)
    evidence = DataEvidence(
        test_rows=len(frame),
        positives=int(frame[spec.label.column].sum()),
        worst_null_feature=str(nulls.idxmax()),
        worst_null_rate=float(nulls.max()),
        fingerprint_trained=candidate.metadata["feature_fingerprint"],
        fingerprint_now=fingerprint_now,
        views_trained=candidate.metadata.get("feature_views", {}),
        views_now=views_now,
        # rounded outwards to the microseconds a datetime holds: the order is kept
        test_from=frame[spec.timestamp_field].min().ceil("us").to_pydatetime(),
        trained_to=seen.floor("us").to_pydatetime(),
        horizon_days=horizon,
        left_out_open_outcome=known["left_out_open_outcome"],
        snapshot=snapshot,
    )
    return frame, evidence
