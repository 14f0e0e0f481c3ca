"""A Feast offline store for Parquet files whose point-in-time join is `pandas.merge_asof`.

Feast's file (dask) store left-joins every entity row with every source row of its key, then
filters by TTL: the intermediate grows with rows-per-key, and an entity row whose key has rows
but none inside the TTL is dropped from the result instead of getting nulls. This store keeps
everything else of the file store (sources, materialization, retrieval jobs) and replaces the
join: per feature view, the latest row at or before each entity timestamp within the TTL, every
entity row kept, in the entity frame's order. Configure with
`offline_store: {type: tasks.feature_store.offline_store.AsOfFileOfflineStore}`.
"""

from __future__ import annotations

from copy import deepcopy
from pathlib import Path
from typing import Any, Literal

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from feast import FileSource
from feast.feature_view import FeatureView
from feast.infra.offline_stores.dask import (
    DaskOfflineStore,
    DaskOfflineStoreConfig,
    DaskRetrievalJob,
)
from feast.infra.offline_stores.offline_store import RetrievalJob, RetrievalMetadata
from feast.infra.registry.base_registry import BaseRegistry
from feast.on_demand_feature_view import OnDemandFeatureView
from feast.repo_config import RepoConfig
from feast.utils import _get_requested_feature_views_to_features_dict
from pydantic import Field

from tasks.data.publish import pin_published, resolve_table_path

ENTITY_TS = "event_timestamp"
_ROW = "__entity_row"
_FEATURE_TS = "__feature_ts"


STORE_TYPE = "tasks.feature_store.offline_store.AsOfFileOfflineStore"


class AsOfFileOfflineStoreConfig(DaskOfflineStoreConfig):
    # Feast looks this class up by name: `<store class>Config` beside the store.
    type: Literal["tasks.feature_store.offline_store.AsOfFileOfflineStore"] = STORE_TYPE  # type: ignore[assignment]
    # output root -> snapshot id read instead of the published one (data_prep's own reads of
    # the snapshot it is about to publish)
    snapshots: dict[str, str] = Field(default_factory=dict)


def _pins(config: RepoConfig) -> dict[str, str]:
    return dict(getattr(config.offline_store, "snapshots", {}) or {})


def _resolved(source: FileSource, config: RepoConfig) -> FileSource:
    """A copy of `source` reading the snapshot its logical path resolves to."""
    path = resolve_table_path(source.path, _pins(config))
    if path == source.path:
        return source
    copy = deepcopy(source)
    copy.file_options.uri = path
    return copy


class AsOfFileOfflineStore(DaskOfflineStore):
    """Sources are logical paths (`<output>/features/<table>`) resolved to one snapshot."""

    @staticmethod
    def pull_latest_from_table_or_query(
        config: RepoConfig, data_source: Any, *args: Any, **kwargs: Any
    ) -> RetrievalJob:  # type: ignore[override]
        return DaskOfflineStore.pull_latest_from_table_or_query(
            config, _resolved(data_source, config), *args, **kwargs
        )

    @staticmethod
    def pull_all_from_table_or_query(
        config: RepoConfig, data_source: Any, *args: Any, **kwargs: Any
    ) -> RetrievalJob:  # type: ignore[override]
        return DaskOfflineStore.pull_all_from_table_or_query(
            config, _resolved(data_source, config), *args, **kwargs
        )

    @staticmethod
    def get_historical_features(
        config: RepoConfig,
        feature_views: list[FeatureView],
        feature_refs: list[str],
        entity_df: pd.DataFrame | str,
        registry: BaseRegistry,
        project: str,
        full_feature_names: bool = False,
    ) -> RetrievalJob:
        if not isinstance(entity_df, pd.DataFrame):
            raise ValueError("entity_df must be a pandas DataFrame")
        if ENTITY_TS not in entity_df.columns:
            raise ValueError(f"entity_df needs a column named '{ENTITY_TS}'")
        requested, _ = _get_requested_feature_views_to_features_dict(
            feature_refs, feature_views, registry.list_on_demand_feature_views(config.project)
        )
        repo_path = Path(config.repo_path or ".")
        timestamps = pd.to_datetime(entity_df[ENTITY_TS], utc=True)

        # every view of this read from the snapshots published when it starts
        pins = pin_published([_source_path(v, repo_path) for v in requested], _pins(config))

        def evaluate() -> dd.DataFrame:
            result = point_in_time_join(entity_df, requested, repo_path, full_feature_names, pins)
            return dd.from_pandas(result, npartitions=1, sort=False)

        return DaskRetrievalJob(
            evaluation_function=evaluate,
            full_feature_names=full_feature_names,
            on_demand_feature_views=OnDemandFeatureView.get_requested_odfvs(
                feature_refs, project, registry
            ),
            metadata=RetrievalMetadata(
                features=feature_refs,
                keys=[c for c in entity_df.columns if c != ENTITY_TS],
                min_event_timestamp=timestamps.min(),
                max_event_timestamp=timestamps.max(),
            ),
            repo_path=str(repo_path),
        )


def point_in_time_join(
    entity_df: pd.DataFrame,
    requested: dict[FeatureView, list[str]],
    repo_path: Path,
    full_feature_names: bool = False,
    pins: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Entity rows with, per view, the latest features at or before their timestamp (in TTL);
    sources read from the snapshot their path resolves to (`pins` first)."""
    result = entity_df.copy()
    result[ENTITY_TS] = pd.to_datetime(result[ENTITY_TS], utc=True).astype("datetime64[ns, UTC]")
    result[_ROW] = np.arange(len(result))
    result = result.sort_values(ENTITY_TS, kind="stable")
    for view, features in requested.items():
        keys = [view.projection.join_key_map.get(c.name, c.name) for c in view.entity_columns]
        ttl = view.ttl if view.ttl and view.ttl.total_seconds() > 0 else None
        first, last = result[ENTITY_TS].min(), result[ENTITY_TS].max()
        names = {c.name: k for c, k in zip(view.entity_columns, keys, strict=True)}
        if full_feature_names:
            prefix = view.projection.name_to_use()
            names |= {f: f"{prefix}__{f}" for f in features}
        wanted = {
            c.name: pa.array(result[k].drop_duplicates().to_numpy())
            for c, k in zip(view.entity_columns, keys, strict=True)
        }
        start = first - ttl if ttl else None
        source = _read_source(view, features, repo_path, (start, last), wanted, names, pins)
        for key in keys:  # merge_asof needs identical key dtypes on both sides
            source[key] = source[key].astype(result[key].dtype)
        result = pd.merge_asof(
            result,
            source,
            left_on=ENTITY_TS,
            right_on=_FEATURE_TS,
            by=keys or None,
            direction="backward",
            allow_exact_matches=True,
            tolerance=pd.Timedelta(ttl) if ttl else None,
        ).drop(columns=_FEATURE_TS)
    return result.sort_values(_ROW).drop(columns=_ROW).reset_index(drop=True)


def _source_path(view: FeatureView, repo_path: Path) -> str:
    path = str(view.batch_source.path)  # type: ignore[attr-defined]
    return path if Path(path).is_absolute() or "://" in path else str(repo_path / path)


def _read_source(
    view: FeatureView,
    features: list[str],
    repo_path: Path,
    window: tuple[pd.Timestamp | None, pd.Timestamp],
    wanted: dict[str, pa.Array],
    names: dict[str, str],
    pins: dict[str, str] | None = None,
) -> pd.DataFrame:
    """The rows that can join: stamped inside `window`, of `wanted` keys; sorted, renamed.

    The time bounds are pushed down to Parquet; the key filter, renaming and sorting happen in
    Arrow, which hands pandas one copy of only the rows that matter.
    """
    start, end = window
    source: Any = view.batch_source
    path = resolve_table_path(_source_path(view, repo_path), pins)
    ts_field = source.timestamp_field
    columns = [c.name for c in view.entity_columns] + [ts_field] + list(features)
    # Arrow takes the bounds at microseconds: round outwards so no nanosecond row is lost
    bounds = [(ts_field, "<=", end.ceil("us"))]
    if start is not None:
        bounds.append((ts_field, ">=", start.floor("us")))
    table = pq.read_table(path, columns=columns, filters=bounds)
    for column, values in wanted.items():
        table = table.filter(
            pc.is_in(table.column(column), value_set=values.cast(table.schema.field(column).type))
        )
    renamed = [_FEATURE_TS if c == ts_field else names.get(c, c) for c in columns]
    frame = table.rename_columns(renamed).sort_by(_FEATURE_TS).to_pandas()
    frame[_FEATURE_TS] = pd.to_datetime(frame[_FEATURE_TS], utc=True).astype("datetime64[ns, UTC]")
    return frame
