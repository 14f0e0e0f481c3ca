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

import math
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
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
DEFAULT_MEMORY_MB = 2048
_BYTES_PER_VALUE = 8
_WORKING_COPIES = 4  # Arrow table, pandas frame, its sorted copy, merge_asof's output
_MAX_PARTITIONS = 256
_BATCH_ROWS = 256_000
_ODFV_ROWS = 250_000  # on-demand transforms: slices past this only cost memory


class AsOfFileOfflineStoreConfig(DaskOfflineStoreConfig):
    # Feast looks this class up by name: `<store class>Config` beside the store.
    type: Literal["tasks.feature_store.offline_store.AsOfFileOfflineStore"] = STORE_TYPE  # type: ignore[assignment]
    # output root -> snapshot id read instead of the published one (data_prep's own reads of
    # the snapshot it is about to publish)
    snapshots: dict[str, str] = Field(default_factory=dict)
    # the working memory of one view's point-in-time join; larger joins go in key partitions
    memory_mb: float = Field(default=DEFAULT_MEMORY_MB, gt=0)
    spill_dir: str | None = None  # where partitions spill (a temporary folder by default)
    dask_address: str | None = None  # join the partitions on this Dask cluster


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

        memory_mb = getattr(config.offline_store, "memory_mb", DEFAULT_MEMORY_MB)

        def join() -> pd.DataFrame:
            return point_in_time_join(
                entity_df,
                requested,
                repo_path,
                full_feature_names,
                pins,
                memory_mb=memory_mb,
                spill_dir=getattr(config.offline_store, "spill_dir", None),
                dask_address=getattr(config.offline_store, "dask_address", None),
            )

        return AsOfRetrievalJob(
            join,
            memory_mb,
            evaluation_function=lambda: dd.from_pandas(join(), npartitions=1, sort=False),
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


class AsOfRetrievalJob(DaskRetrievalJob):
    """Feast's Dask retrieval job, whose `to_df` keeps the join's frame: Feast's own goes
    through Arrow and back, with the on-demand transforms on the whole table (about three
    copies of the result at once); here they run on Arrow slices of `memory_mb`."""

    def __init__(self, join: Callable[[], pd.DataFrame], memory_mb: float, **kwargs: Any):
        super().__init__(**kwargs)
        self._join, self._memory_mb = join, memory_mb

    def to_df(self, validation_reference: Any = None, timeout: int | None = None) -> pd.DataFrame:
        if validation_reference is not None:
            return super().to_df(validation_reference=validation_reference, timeout=timeout)
        frame = self._join()
        width = max(1, frame.shape[1]) * _BYTES_PER_VALUE * _WORKING_COPIES
        rows = max(10_000, min(_ODFV_ROWS, int(self._memory_mb * 2**20 / width)))
        for odfv in self.on_demand_feature_views:
            pieces = []
            for start in range(0, len(frame), rows):
                table = pa.Table.from_pandas(frame.iloc[start : start + rows], preserve_index=False)
                out = odfv.transform_arrow(table, self.full_feature_names)
                keep = [c for c in out.column_names if not c.startswith("__index")]
                pieces.append(out.select(keep).to_pandas())
            computed = pd.concat(pieces, ignore_index=True)
            for column in computed.columns:
                frame[column] = computed[column].to_numpy()
        return frame.reset_index(drop=True)


def point_in_time_join(
    entity_df: pd.DataFrame,
    requested: dict[FeatureView, list[str]],
    repo_path: Path,
    full_feature_names: bool = False,
    pins: dict[str, str] | None = None,
    memory_mb: float = DEFAULT_MEMORY_MB,
    spill_dir: str | None = None,
    dask_address: str | None = None,
) -> pd.DataFrame:
    """Entity rows with, per view, the latest features at or before their timestamp (in TTL);
    sources read from the snapshot their path resolves to (`pins` first).

    Memory stays near the result's own size: each view joins only the entity rows' keys and
    times, in time-ordered chunks sized to `memory_mb`, and its feature columns are added to
    the result as they come. A view whose rows that can join would not fit `memory_mb` is joined
    in partitions by entity key instead: one streaming pass over the source writes its rows, by
    a hash of their key, to spill files under `spill_dir` (a temporary folder); then each
    partition's entity rows are joined with its file alone (on the Dask cluster at
    `dask_address`, if given).
    """
    ts = pd.to_datetime(entity_df[ENTITY_TS], utc=True).astype("datetime64[ns, UTC]")
    keys = list(
        dict.fromkeys(
            view.projection.join_key_map.get(c.name, c.name)
            for view in requested
            for c in view.entity_columns
        )
    )
    entities = pd.DataFrame({k: entity_df[k].to_numpy() for k in keys})
    entities[_ROW] = np.arange(len(entity_df))
    entities[ENTITY_TS] = ts.array  # tz-aware, as the sources' stamps
    entities = entities.sort_values(ENTITY_TS, kind="stable")
    result = entity_df.copy(deep=False)
    result[ENTITY_TS] = ts
    first, last = ts.min(), ts.max()
    for view, features in requested.items():
        join = _ViewJoin.of(view, features, entities, repo_path, full_feature_names, pins)
        parts = join.partitions(first, last, memory_mb)
        if parts == 1:
            joined = join.in_chunks(entities, first, last, _chunk_rows(memory_mb, join))
        else:
            with _executor(dask_address) as executor:
                joined = join.in_partitions(entities, first, last, parts, spill_dir, executor)
        for column in joined.columns.drop(_ROW):
            result[column] = joined[column].to_numpy()
        del joined
    return result.reset_index(drop=True)


def _chunk_rows(memory_mb: float, join: _ViewJoin) -> int:
    """Entity rows per chunk: their keys, time, row number and the view's features, with the
    merge's copies, within `memory_mb`."""
    width = (len(join.keys) + 2 + len(join.features)) * _BYTES_PER_VALUE * _WORKING_COPIES
    return max(10_000, int(memory_mb * 2**20 / width))


@contextmanager
def _executor(address: str | None) -> Iterator[Any]:
    """A client of the Dask cluster at `address`, or None: join here."""
    if not address:
        yield None
        return
    from distributed import Client

    with Client(address, set_as_default=False) as client:
        yield client


@dataclass
class _ViewJoin:
    """One view's part of the join, as plain data (it travels to Dask workers): its keys,
    TTL, columns and source."""

    features: list[str]
    keys: list[str]  # the entity frame's names of the view's join keys
    source_keys: list[str]  # their names in the source
    ts_field: str
    ttl: Any
    names: dict[str, str]  # source column -> result column
    path: str
    wanted: dict[str, pa.Array]  # source key column -> the entity frame's values

    @classmethod
    def of(
        cls,
        view: FeatureView,
        features: list[str],
        entities: pd.DataFrame,
        repo_path: Path,
        full_feature_names: bool,
        pins: dict[str, str] | None,
    ) -> _ViewJoin:
        keys = [view.projection.join_key_map.get(c.name, c.name) for c in view.entity_columns]
        names = {c.name: k for c, k in zip(view.entity_columns, keys, strict=True)}
        if full_feature_names:
            prefix = view.projection.name_to_use()
            names |= {f: f"{prefix}__{f}" for f in features}
        wanted = {
            c.name: pa.array(entities[k].drop_duplicates().to_numpy())
            for c, k in zip(view.entity_columns, keys, strict=True)
        }
        ttl = view.ttl if view.ttl and view.ttl.total_seconds() > 0 else None
        path = resolve_table_path(_source_path(view, repo_path), pins)
        ts_field = view.batch_source.timestamp_field  # type: ignore[attr-defined]
        source_keys = [c.name for c in view.entity_columns]
        return cls(features, keys, source_keys, ts_field, ttl, names, path, wanted)

    @property
    def columns(self) -> list[str]:
        return [*self.source_keys, self.ts_field, *self.features]

    def _filter(self, first: pd.Timestamp, last: pd.Timestamp) -> Any:
        """Stamped inside [first - TTL, last], rounded outwards to Arrow's microseconds."""
        ts_field = self.ts_field
        bounds = [(ts_field, "<=", last.ceil("us"))]
        if self.ttl:
            bounds.append((ts_field, ">=", (first - self.ttl).floor("us")))
        return pq.filters_to_expression(bounds)

    def _keep(self, table: pa.Table | pa.RecordBatch) -> Any:
        for column, values in self.wanted.items():
            field = table.schema.field(column)
            table = table.filter(pc.is_in(table.column(column), value_set=values.cast(field.type)))
        return table

    def _frame(self, table: pa.Table, entities: pd.DataFrame) -> pd.DataFrame:
        ts_field = self.ts_field
        renamed = [_FEATURE_TS if c == ts_field else self.names.get(c, c) for c in self.columns]
        frame = table.rename_columns(renamed).sort_by(_FEATURE_TS).to_pandas()
        frame[_FEATURE_TS] = pd.to_datetime(frame[_FEATURE_TS], utc=True).astype(
            "datetime64[ns, UTC]"
        )
        for key in self.keys:  # merge_asof needs identical key dtypes on both sides
            frame[key] = frame[key].astype(entities[key].dtype)
        return frame

    def read(self, first: pd.Timestamp, last: pd.Timestamp) -> pa.Table:
        """The rows that can join, whole (time bounds pushed down to Parquet, keys in Arrow)."""
        return self._keep(
            pq.read_table(self.path, columns=self.columns, filters=self._filter(first, last))
        )

    def merge(self, entities: pd.DataFrame, source: pa.Table) -> pd.DataFrame:
        """`entities` (sorted by time) with the latest source row at or before each, in TTL."""
        return self._merge(entities, self._frame(source, entities))

    def _merge(self, entities: pd.DataFrame, source: pd.DataFrame) -> pd.DataFrame:
        return pd.merge_asof(
            entities,
            source,
            left_on=ENTITY_TS,
            right_on=_FEATURE_TS,
            by=self.keys or None,
            direction="backward",
            allow_exact_matches=True,
            tolerance=pd.Timedelta(self.ttl) if self.ttl else None,
        ).drop(columns=_FEATURE_TS)

    def in_chunks(
        self, entities: pd.DataFrame, first: pd.Timestamp, last: pd.Timestamp, chunk_rows: int
    ) -> pd.DataFrame:
        """`_ROW` and the view's features for every entity row (`entities` sorted by time), in
        `_ROW` order: the source read whole, the entity rows joined `chunk_rows` at a time
        with only the source rows inside their time range (and TTL)."""
        source = self._frame(self.read(first, last), entities)
        stamps = source[_FEATURE_TS]
        keyed = entities[[_ROW, ENTITY_TS, *self.keys]]
        joined = []
        for start in range(0, len(keyed), chunk_rows):
            chunk = keyed.iloc[start : start + chunk_rows]
            since, until = chunk[ENTITY_TS].iloc[0], chunk[ENTITY_TS].iloc[-1]
            lo = stamps.searchsorted(since - self.ttl, "left") if self.ttl else 0
            hi = stamps.searchsorted(until, "right")
            merged = self._merge(chunk, source.iloc[lo:hi])
            joined.append(merged.drop(columns=[ENTITY_TS, *self.keys]))
        return pd.concat(joined).sort_values(_ROW).reset_index(drop=True)

    def partitions(self, first: pd.Timestamp, last: pd.Timestamp, memory_mb: float) -> int:
        """How many key partitions keep one partition's rows (as pandas, with the copies the
        sort and the merge make) within `memory_mb`."""
        if not self.keys:
            return 1
        rows = ds.dataset(self.path, format="parquet").count_rows(filter=self._filter(first, last))
        need = rows * len(self.columns) * _BYTES_PER_VALUE * _WORKING_COPIES
        return max(1, min(_MAX_PARTITIONS, math.ceil(need / (memory_mb * 2**20))))

    def in_partitions(
        self,
        entities: pd.DataFrame,
        first: pd.Timestamp,
        last: pd.Timestamp,
        parts: int,
        spill_dir: str | None,
        executor: Any = None,
    ) -> pd.DataFrame:
        """`_ROW` and the view's features for every entity row (in `_ROW` order), joined one
        key partition at a time: here, or on `executor` (anything with `submit`, e.g. a Dask
        client; its workers must see `spill_dir`)."""
        keyed = entities[[_ROW, ENTITY_TS, *self.keys]]
        part_of = _partition(keyed[self.keys], parts)
        with tempfile.TemporaryDirectory(prefix="mlops-pit-", dir=spill_dir) as spill:
            files = self._spill(first, last, parts, entities, Path(spill))
            schema = self._schema()
            work = []
            for part in range(parts):
                mine = keyed[part_of == part].sort_values(ENTITY_TS, kind="stable")
                if not mine.empty:
                    work.append((mine, files[part]))
            if executor is None:
                joined = [_merge_partition(self, mine, file, schema) for mine, file in work]
            else:
                futures = [
                    executor.submit(_merge_partition, self, mine, file, schema)
                    for mine, file in work
                ]
                joined = [future.result() for future in futures]
        return pd.concat(joined).sort_values(_ROW).reset_index(drop=True)

    def _schema(self) -> pa.Schema:
        schema = ds.dataset(self.path, format="parquet").schema
        return pa.schema([schema.field(c) for c in self.columns])

    def _spill(
        self,
        first: pd.Timestamp,
        last: pd.Timestamp,
        parts: int,
        entities: pd.DataFrame,
        folder: Path,
    ) -> list[str | None]:
        """One pass over the source: its rows that can join, by key partition, to files."""
        writers: dict[int, pq.ParquetWriter] = {}
        source_keys = self.source_keys
        dtypes = {s: entities[k].dtype for s, k in zip(source_keys, self.keys, strict=True)}
        try:
            scanner = ds.dataset(self.path, format="parquet").scanner(
                columns=self.columns, filter=self._filter(first, last), batch_size=_BATCH_ROWS
            )
            for batch in scanner.to_batches():
                batch = self._keep(batch)
                if batch.num_rows == 0:
                    continue
                keys = batch.select(source_keys).to_pandas()
                part_of = _partition(keys.astype(dtypes), parts)
                for part in np.unique(part_of):
                    rows = batch.filter(pa.array(part_of == part))
                    if part not in writers:
                        path = folder / f"part-{part}.parquet"
                        writers[part] = pq.ParquetWriter(path, rows.schema)
                    writers[part].write_batch(rows)
        finally:
            for writer in writers.values():
                writer.close()
        return [str(folder / f"part-{p}.parquet") if p in writers else None for p in range(parts)]


def _merge_partition(
    join: _ViewJoin, entities: pd.DataFrame, file: str | None, schema: pa.Schema
) -> pd.DataFrame:
    """One key partition: its entity rows with its spilled source rows (none: no file)."""
    table = pq.read_table(file) if file else schema.empty_table()
    return join.merge(entities, table).drop(columns=[ENTITY_TS, *join.keys])


def _partition(keys: pd.DataFrame, parts: int) -> np.ndarray:
    """A key partition per row: a hash of the key columns, the same for equal keys."""
    hashed = pd.util.hash_pandas_object(keys.reset_index(drop=True), index=False).to_numpy()
    return (hashed % np.uint64(parts)).astype(np.int64)


def _source_path(view: FeatureView, repo_path: Path) -> str:
    path = str(view.batch_source.path)  # type: ignore[attr-defined]
    return path if Path(path).is_absolute() or "://" in path else str(repo_path / path)
