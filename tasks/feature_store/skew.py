"""The train/serve skew check: online vectors against offline ones as of the same time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from feast import FeatureStore

from tasks.feature_store.definitions import FeatureStoreError
from tasks.feature_store.store import (
    StoreSettings,
    apply_definitions,
    materialize,
    online_features,
    open_store,
    training_set,
)
from tasks.specs.dataset_spec import DatasetSpec


@dataclass
class SkewReport:
    entities: int
    mismatch_rate: dict[str, float]

    @property
    def worst(self) -> float:
        return max(self.mismatch_rate.values(), default=0.0)


def skew_check(
    store: FeatureStore,
    spec: DatasetSpec,
    service: str,
    entity_ids: pd.DataFrame,
    as_of: datetime,
    rtol: float = 1e-6,
) -> SkewReport:
    """Compare online vectors with offline ones as of `as_of`, feature by feature.

    `as_of` is the materialization's end, which Feast excludes: the offline side is read just
    before it.
    """
    keys = spec.service_keys(service)
    before = as_of - timedelta(microseconds=1)
    entity_df = entity_ids[keys].drop_duplicates().assign(**{spec.timestamp_field: before})
    offline = training_set(store, spec, entity_df, service).set_index(keys).sort_index()
    rows = entity_df[keys].to_dict("records")
    online = online_features(store, spec, service, rows).set_index(keys).sort_index()
    rates = {}
    for column in online.columns:
        if column not in offline.columns:
            continue
        a, b = online[column], offline[column].reindex(online.index)
        same = _same_values(a, b, rtol)
        rates[column] = float(1.0 - same.mean()) if len(same) else 0.0
    return SkewReport(entities=len(entity_df), mismatch_rate=rates)


def _same_values(a: pd.Series, b: pd.Series, rtol: float) -> np.ndarray:
    """Element-wise equality; missing on both sides is equal, numbers compare within `rtol`."""
    both_missing = (a.isna() & b.isna()).to_numpy()
    x, y = pd.to_numeric(a, errors="coerce"), pd.to_numeric(b, errors="coerce")
    if x.notna().sum() == a.notna().sum() and y.notna().sum() == b.notna().sum():
        close = np.isclose(x.to_numpy(float), y.to_numpy(float), rtol=rtol, equal_nan=False)
    else:
        close = (a.astype(str) == b.astype(str)).to_numpy()
    return close | both_missing


class SkewError(FeatureStoreError):
    """Online and offline features disagree beyond the allowed rate."""


def sync_feature_store(
    spec: DatasetSpec,
    settings: StoreSettings,
    features_uri: str,
    now: datetime,
    max_skew_rate: float,
    sample: int = 200,
    seed: int = 0,
) -> dict[str, SkewReport]:
    """Apply the dataset's definitions, materialize up to `now`, then check train/serve skew.

    The check samples entities from the labels table and compares, per feature service, the
    online vector with the offline one as of `now`; past `max_skew_rate` it raises SkewError.
    """
    if "://" not in features_uri:
        features_uri = str(Path(features_uri).resolve())
    store = open_store(settings)
    apply_definitions(store, spec, features_uri)
    materialize(store, spec, end=now)
    labels = pd.read_parquet(f"{features_uri}/labels", columns=spec.join_keys())
    reports = {}
    for service in spec.feature_services:
        keys = spec.service_keys(service)
        entities = labels[keys].drop_duplicates()
        entities = entities.sample(min(sample, len(entities)), random_state=seed)
        reports[service] = skew_check(store, spec, service, entities, now)
    enforce_skew(reports, max_skew_rate)
    return reports


def enforce_skew(reports: dict[str, SkewReport], max_skew_rate: float) -> None:
    """Raise SkewError naming the worst features if any mismatch rate exceeds the maximum."""
    bad = {
        f"{service}.{feature}": rate
        for service, report in reports.items()
        for feature, rate in report.mismatch_rate.items()
        if rate > max_skew_rate
    }
    if bad:
        worst = ", ".join(
            f"{k}: {v:.1%}" for k, v in sorted(bad.items(), key=lambda kv: -kv[1])[:5]
        )
        raise SkewError(
            f"train/serve skew over max_skew_rate {max_skew_rate:.1%} for {len(bad)} "
            f"feature(s): {worst}"
        )
