"""Feast as the single source of features: the store opened from settings, apply, materialize,
point-in-time training sets, online lookups, the feature-set fingerprint and Feast's own CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import yaml
from feast import FeatureService, FeatureStore, FeatureView
from feast.repo_config import RepoConfig

from deployments.fingerprint import fingerprint as feature_set_fingerprint
from deployments.online_reader import OnlineReader, OnlineStoreError
from tasks.feature_store.definitions import FeatureStoreError, feast_objects, view_name
from tasks.feature_store.offline_store import STORE_TYPE
from tasks.feature_store.online_store import STORE_TYPE as ONLINE_STORE_TYPE
from tasks.feature_store.online_store import store_path
from tasks.specs.dataset_spec import DatasetSpec


@dataclass(frozen=True)
class StoreSettings:
    """Where the registry and the online store live (the FeatureRepo block's plain form)."""

    repo_path: str = "features"
    project: str = "mlops"
    registry_path: str = "data/feast/registry.db"
    online_store: Literal["sqlite", "redis"] = "sqlite"
    sqlite_path: str = "data/feast/online_store.db"
    redis_connection_string: str = ""


def open_store(settings: StoreSettings, online: dict[str, Any] | None = None) -> FeatureStore:
    """A FeatureStore configured in code (local provider, file offline store, the SQLite
    online store of tasks/feature_store/online_store.py or Feast's Redis store). `online`, a Feast
    online-store config, replaces the settings' choice (Feast's own SQLite store, to compare)."""
    if online is None and settings.online_store == "redis":
        if not settings.redis_connection_string:
            raise FeatureStoreError("online_store redis needs redis_connection_string")
        online = {"type": "redis", "connection_string": settings.redis_connection_string}
    elif online is None:
        online = {"type": ONLINE_STORE_TYPE, "path": str(Path(settings.sqlite_path).resolve())}
    for path in (settings.registry_path, settings.sqlite_path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    config = RepoConfig(
        project=settings.project,
        provider="local",
        registry=str(Path(settings.registry_path).resolve()),
        online_store=online,
        offline_store={"type": STORE_TYPE},
        entity_key_serialization_version=3,
        repo_path=Path(settings.repo_path).resolve(),
    )
    return FeatureStore(config=config)


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


def _service(store: FeatureStore, name: str) -> FeatureService:
    try:
        return store.get_feature_service(name)
    except Exception as exc:
        known = sorted(s.name for s in store.list_feature_services())
        raise FeatureStoreError(f"feature service '{name}' does not exist; known: {known}") from exc


def check_entity_frame(spec: DatasetSpec, entity_df: pd.DataFrame, service: str) -> None:
    required = [*spec.service_keys(service), spec.timestamp_field]
    missing = [c for c in required if c not in entity_df.columns]
    if missing:
        raise FeatureStoreError(
            f"entity frame lacks column(s) {missing}; it needs {required} (dataset '{spec.name}')"
        )
    ts = entity_df[spec.timestamp_field]
    if not pd.api.types.is_datetime64_any_dtype(ts):
        raise FeatureStoreError(f"entity frame column '{spec.timestamp_field}' must be datetimes")


def training_set(
    store: FeatureStore, spec: DatasetSpec, entity_df: pd.DataFrame, service: str
) -> pd.DataFrame:
    """Point-in-time correct features for each (entity, timestamp) row of `entity_df`."""
    fs = _service(store, service)
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
    """A feature service's feature columns and, of those, the categorical ones."""
    tables = spec.feature_services[service]
    features = [f.name for t in tables for f in store.get_feature_view(view_name(spec, t)).features]
    categorical = [c for t in tables for c in spec.feature_tables[t].categorical]
    return features, categorical


def online_reader(store: FeatureStore, service: str) -> OnlineReader:
    """A reader of the service's features from the SQLite online store, for serving processes
    (hold one: it resolves the views once)."""
    online = store.config.online_store
    if online.type != ONLINE_STORE_TYPE:
        raise FeatureStoreError(f"online_reader needs the SQLite online store, not {online.type}")
    fs = _service(store, service)
    features = {p.name: [f.name for f in p.features] for p in fs.feature_view_projections}
    try:
        return OnlineReader(store_path(store.config), store.project, features)
    except OnlineStoreError as exc:
        raise FeatureStoreError(f"feature service '{service}': {exc}") from exc


def online_features(
    store: FeatureStore, spec: DatasetSpec, service: str, entities: list[dict[str, Any]]
) -> pd.DataFrame:
    """Latest feature values for serving-time lookups (join keys, then features)."""
    fs = _service(store, service)
    missing = [k for k in spec.service_keys(service) if any(k not in e for e in entities)]
    if missing:
        raise FeatureStoreError(f"entity rows lack join key(s) {missing}")
    if store.config.online_store.type != ONLINE_STORE_TYPE:
        frame = store.get_online_features(features=fs, entity_rows=entities).to_df()
        features, _ = service_features(store, spec, service)
        return frame[[*spec.service_keys(service), *features]]  # Feast's order is a set's
    reader = online_reader(store, service)
    try:
        return pd.DataFrame(reader.read(entities))
    except OnlineStoreError as exc:
        raise FeatureStoreError(f"feature service '{service}': {exc}") from exc
    finally:
        reader.close()


def fingerprint(store: FeatureStore, service: str) -> str:
    """The service's views (names, entities, features, dtypes, TTLs) as a plain-data fingerprint."""
    fs = _service(store, service)
    views = []
    for projection in fs.feature_view_projections:
        view = store.get_feature_view(projection.name)
        views.append(
            {
                "name": view.name,
                "entities": sorted(view.entities),
                "ttl_s": int(view.ttl.total_seconds()) if view.ttl else 0,
                "features": [[f.name, str(f.dtype)] for f in projection.features],
            }
        )
    return feature_set_fingerprint(service, views)


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
