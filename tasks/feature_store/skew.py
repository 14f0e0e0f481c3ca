"""The train/serve skew check: online vectors against offline ones as of the same time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
from feast import FeatureStore

from tasks.feature_store.definitions import FeatureStoreError
from tasks.feature_store.store import online_features, training_set
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
    """Compare online vectors with offline ones as of `as_of`, feature by feature, stored
    features only (on-demand ones are computed by the same function on both sides).

    `as_of` is the materialization's end, which Feast excludes: both sides are read just
    before it, the online side treating values past their TTL as missing, as the offline
    point-in-time join does.
    """
    keys = spec.service_keys(service)
    before = as_of - timedelta(microseconds=1)
    entity_df = entity_ids[keys].drop_duplicates().assign(**{spec.timestamp_field: before})
    offline = training_set(store, spec, entity_df, service, stored_only=True)
    offline = offline.set_index(keys).sort_index()
    rows = entity_df[keys].to_dict("records")
    online = online_features(store, spec, service, rows, as_of=before)
    online = online.set_index(keys).sort_index()
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


def sample_entities(
    spec: DatasetSpec, labels_uri: str, service: str, sample: int, seed: int = 0
) -> pd.DataFrame:
    """Up to `sample` distinct entities of the labelled rows, for the skew check."""
    keys = spec.service_keys(service)
    entities = pd.read_parquet(labels_uri, columns=keys).drop_duplicates()
    return entities.sample(min(sample, len(entities)), random_state=seed)


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
