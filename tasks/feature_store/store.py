"""Feast as the single source of features: the store opened from settings, apply, materialize,
point-in-time training sets, online lookups, the feature-set fingerprint and Feast's own CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import yaml
from feast import FeatureService, FeatureStore, FeatureView
from feast.repo_config import RepoConfig

from deployments.fingerprint import fingerprint as feature_set_fingerprint
from deployments.fingerprint import view_digests as view_digest_map
from deployments.online_reader import OnlineReader, OnlineStoreError, ViewReader
from deployments.redis_reader import RedisOnlineReader
from tasks.data.publish import absolute_uri, current_snapshot
from tasks.feature_store.definitions import FeatureStoreError, feast_objects, view_name
from tasks.feature_store.offline_store import DEFAULT_MEMORY_MB, STORE_TYPE
from tasks.feature_store.online_store import STORE_TYPE as ONLINE_STORE_TYPE
from tasks.feature_store.online_store import RowSqliteOnlineStore, store_path
from tasks.feature_store.redis_store import REDIS_STORE_TYPE, redis_url
from tasks.specs.dataset_spec import DatasetSpec


@dataclass(frozen=True)
class StoreSettings:
    """Where the registry and the online store live (the FeatureRepo block's plain form)."""

    repo_path: str = "features"
    project: str = "mlops"
    registry_path: str = "data/feast/registry.db"
    online_store: Literal["sqlite", "redis"] = "sqlite"
    sqlite_path: str = "data/feast/online_store.db"
    redis_connection_string: str = field(default="", repr=False)  # may hold a password
    retrieval_memory_mb: float = DEFAULT_MEMORY_MB  # a view's point-in-time join, then partitions
    spill_dir: str | None = None
    retrieval_dask_address: str | None = None  # a partitioned join's partitions run there


def open_store(
    settings: StoreSettings,
    online: dict[str, Any] | None = None,
    stage: str | None = None,
    pins: dict[str, str] | None = None,
) -> FeatureStore:
    """A FeatureStore configured in code (local provider, the as-of file offline store, the
    SQLite online store of tasks/feature_store/online_store.py or Feast's Redis store).

    `online`, a Feast online-store config, replaces the settings' choice (Feast's own SQLite
    store, to compare). `stage` sends SQLite writes to staged tables; `pins` (output root ->
    snapshot id) makes the offline store read those snapshots instead of the published ones.
    """
    if online is None and settings.online_store == "redis":
        if not settings.redis_connection_string:
            raise FeatureStoreError("online_store redis needs redis_connection_string")
        online = {"type": REDIS_STORE_TYPE, "connection_string": settings.redis_connection_string}
    elif online is None:
        online = {"type": ONLINE_STORE_TYPE, "path": str(Path(settings.sqlite_path).resolve())}
        if stage:
            online["stage"] = stage
    for path in (settings.registry_path, settings.sqlite_path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    config = RepoConfig(
        project=settings.project,
        provider="local",
        registry=str(Path(settings.registry_path).resolve()),
        online_store=online,
        offline_store={
            "type": STORE_TYPE,
            "snapshots": pins or {},
            "memory_mb": settings.retrieval_memory_mb,
            "spill_dir": settings.spill_dir,
            "dask_address": settings.retrieval_dask_address,
        },
        entity_key_serialization_version=3,
        repo_path=Path(settings.repo_path).resolve(),
    )
    return FeatureStore(config=config)


def snapshot_store(settings: StoreSettings, output_uri: str) -> tuple[FeatureStore, str | None]:
    """A store that reads the snapshot of `output_uri` published now for as long as it is
    used (a publish meanwhile does not change what it reads), and that snapshot's id."""
    root = absolute_uri(output_uri)
    snapshot = current_snapshot(root)
    return open_store(settings, pins={root: snapshot} if snapshot else None), snapshot


def apply_definitions(store: FeatureStore, spec: DatasetSpec, features_uri: str) -> list[str]:
    """Register (or update) the dataset's entity, views and services; returns the view names."""
    objects = feast_objects(spec, features_uri)
    try:
        store.apply(objects)
    except Exception as exc:
        raise FeatureStoreError(f"feast apply for dataset '{spec.name}' failed: {exc}") from exc
    return [o.name for o in objects if isinstance(o, FeatureView)]


def materialize(
    store: FeatureStore,
    spec: DatasetSpec,
    end: datetime,
    start: datetime | None = None,
    incremental: bool = False,
) -> None:
    """Load the latest feature values before `end` into the online store.

    By default each view's whole TTL window, [end - ttl, end): data_prep rewrites the offline
    tables wholesale, so values stamped before the last run may have changed. With `start`,
    exactly [start, end). Incremental: from where each view's last run ended (for append-only
    sources; Feast's own incremental mode counts the first window from the wall clock).
    """
    for table in spec.feature_tables:
        view = store.get_feature_view(view_name(spec, table))
        window = end - (view.ttl or timedelta(days=3650))
        since = start or (view.most_recent_end_time if incremental else None) or window
        if since < end:
            store.materialize(start_date=since, end_date=end, feature_views=[view.name])


def begin_stage(store: FeatureStore, spec: DatasetSpec) -> None:
    """Create the (empty) staged tables of every stored view, so a view with nothing to
    materialize is promoted empty rather than missing. `store` is opened with a stage."""
    views = [store.get_feature_view(view_name(spec, t)) for t in spec.feature_tables]
    RowSqliteOnlineStore().update(store.config, [], views, [], [], partial=False)


def _service(store: FeatureStore, name: str) -> FeatureService:
    try:
        return store.get_feature_service(name)
    except Exception as exc:
        known = sorted(s.name for s in store.list_feature_services())
        raise FeatureStoreError(f"feature service '{name}' does not exist; known: {known}") from exc


def stored_refs(views: dict[str, list[str]]) -> list[str]:
    """`stored_features`' views as Feast feature references, `view:feature`."""
    return [f"{view}:{feature}" for view, names in views.items() for feature in names]


def stored_features(store: FeatureStore, service: str) -> dict[str, list[str]]:
    """The service's stored views (not its on-demand ones) -> their feature names, in order."""
    on_demand = {v.name for v in store.list_on_demand_feature_views()}
    return {
        p.name: [f.name for f in p.features]
        for p in _service(store, service).feature_view_projections
        if p.name not in on_demand
    }


def check_entity_frame(spec: DatasetSpec, entity_df: pd.DataFrame, service: str) -> None:
    required = [
        *spec.service_keys(service),
        spec.timestamp_field,
        *spec.service_request_fields(service),
    ]
    missing = [c for c in required if c not in entity_df.columns]
    if missing:
        raise FeatureStoreError(
            f"entity frame lacks column(s) {missing}; it needs {required} (dataset '{spec.name}')"
        )
    ts = entity_df[spec.timestamp_field]
    if not pd.api.types.is_datetime64_any_dtype(ts):
        raise FeatureStoreError(f"entity frame column '{spec.timestamp_field}' must be datetimes")


def training_set(
    store: FeatureStore,
    spec: DatasetSpec,
    entity_df: pd.DataFrame,
    service: str,
    stored_only: bool = False,
) -> pd.DataFrame:
    """Point-in-time correct features for each (entity, timestamp) row of `entity_df`; the
    service's on-demand features are computed from the frame's request fields, unless
    `stored_only` (then the frame needs no request fields)."""
    if stored_only:
        refs = stored_refs(stored_features(store, service))
        job = store.get_historical_features(entity_df=entity_df, features=refs)
    else:
        fs = _service(store, service)  # an unknown service named before the frame is checked
        check_entity_frame(spec, entity_df, service)
        job = store.get_historical_features(entity_df=entity_df, features=fs)
    return job.to_df()


def labelled_set(
    store: FeatureStore, spec: DatasetSpec, labels: pd.DataFrame, service: str
) -> pd.DataFrame:
    """`training_set` with the label mapped to 1.0 (positive class) / 0.0; NaN labels stay NaN."""
    frame = training_set(store, spec, labels, service)
    label = spec.label.column
    is_positive = (frame[label] == spec.label.positive).astype("float64")
    frame[label] = is_positive.where(frame[label].notna())
    return frame


def service_features(
    store: FeatureStore, spec: DatasetSpec, service: str
) -> tuple[list[str], list[str]]:
    """A feature service's feature columns (stored, then request, then on-demand) and, of
    those, the categorical ones."""
    stored = [f for names in stored_features(store, service).values() for f in names]
    on_demand = spec.service_on_demand(service)
    request = list(spec.request.features) if spec.request is not None and on_demand else []
    computed = [f for name in on_demand for f in spec.on_demand[name].outputs]
    categorical = [
        *(c for t in spec.service_tables(service) for c in spec.feature_tables[t].categorical),
        *(c for name in on_demand for c in spec.on_demand[name].categorical),
    ]
    return [*stored, *request, *computed], categorical


def online_reader(store: FeatureStore, service: str) -> ViewReader:
    """A reader of the service's stored features straight from the SQLite or Redis online
    store, as serving processes read them (hold one: it resolves the views once)."""
    online = store.config.online_store
    views = stored_features(store, service)
    try:
        if online.type == REDIS_STORE_TYPE:
            url = redis_url(online.connection_string)
            return RedisOnlineReader(url, store.project, views)
        if online.type != ONLINE_STORE_TYPE:
            raise FeatureStoreError(f"online_reader reads SQLite or Redis, not {online.type}")
        stage = getattr(online, "stage", None)
        return OnlineReader(store_path(store.config), store.project, views, stage=stage)
    except OnlineStoreError as exc:
        raise FeatureStoreError(f"feature service '{service}': {exc}") from exc


def online_features(
    store: FeatureStore,
    spec: DatasetSpec,
    service: str,
    entities: list[dict[str, Any]],
    as_of: datetime | None = None,
) -> pd.DataFrame:
    """Latest stored feature values for serving-time lookups (join keys, then features); values
    older than their view's TTL as of `as_of` (default: now) are missing."""
    missing = [k for k in spec.service_keys(service) if any(k not in e for e in entities)]
    if missing:
        raise FeatureStoreError(f"entity rows lack join key(s) {missing}")
    if store.config.online_store.type not in (ONLINE_STORE_TYPE, REDIS_STORE_TYPE):
        views = stored_features(store, service)
        frame = store.get_online_features(features=stored_refs(views), entity_rows=entities)
        frame = frame.to_df()
        features = [f for names in views.values() for f in names]
        return frame[[*spec.service_keys(service), *features]]  # Feast's order is a set's
    reader = online_reader(store, service)
    try:
        return pd.DataFrame(reader.read(entities, as_of))
    except OnlineStoreError as exc:
        raise FeatureStoreError(f"feature service '{service}': {exc}") from exc
    finally:
        reader.close()


def view_descriptions(store: FeatureStore, service: str) -> list[dict[str, Any]]:
    """The service's views as plain data: name, entities, features and dtypes, TTL, and the
    digest of their definition (spec entry and transform source)."""
    on_demand = {v.name: v for v in store.list_on_demand_feature_views()}
    views = []
    for projection in _service(store, service).feature_view_projections:
        view: Any = on_demand.get(projection.name) or store.get_feature_view(projection.name)
        ttl = getattr(view, "ttl", None)
        views.append(
            {
                "name": view.name,
                "entities": sorted(getattr(view, "entities", [])),
                "ttl_s": int(ttl.total_seconds()) if ttl else 0,
                "features": [[f.name, str(f.dtype)] for f in projection.features],
                "definition": view.tags.get("definition", ""),
            }
        )
    return views


def feature_set(store: FeatureStore, service: str) -> tuple[str, dict[str, str]]:
    """The feature set's fingerprint (deployments/fingerprint.py) and, per view, the digest of
    its description (what tells which table changed), from one read of the registry."""
    views = view_descriptions(store, service)
    return feature_set_fingerprint(service, views), view_digest_map(views)


def fingerprint(store: FeatureStore, service: str) -> str:
    return feature_set(store, service)[0]


def run_feast_cli(repo_path: str, command: str, data_root: str | None = None) -> str:
    """Run Feast's own CLI (`plan` or `apply`) on a repository; a failure names the repo."""
    env = {**os.environ, **({"MLOPS_DATA_ROOT": data_root} if data_root else {})}
    _make_store_folders(Path(repo_path))
    feast = str(Path(sys.executable).with_name("feast"))
    done = subprocess.run(
        [feast, command], cwd=repo_path, env=env, capture_output=True, text=True, timeout=300
    )
    if done.returncode != 0:
        lines = [ln for ln in (done.stderr or done.stdout).strip().splitlines() if ln.strip()]
        raise FeatureStoreError(
            f"{repo_path}: feast {command} failed: {lines[-1] if lines else 'no output'}"
        )
    return done.stdout


def _make_store_folders(repo: Path) -> None:
    """Feast does not create the folders of its registry and SQLite online store itself."""
    config = yaml.safe_load((repo / "feature_store.yaml").read_text()) or {}
    registry = config.get("registry")
    paths = [registry.get("path") if isinstance(registry, dict) else registry]
    online = config.get("online_store") or {}
    if isinstance(online, dict) and online.get("type", "sqlite") == "sqlite":
        paths.append(online.get("path"))
    for path in filter(None, paths):
        if "://" not in path:
            (repo / path).parent.mkdir(parents=True, exist_ok=True)
