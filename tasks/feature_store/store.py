"""Feast as the single source of features: definitions from a dataset spec, apply, materialize,
point-in-time training sets, online lookups, the feature-set fingerprint and the skew check."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml
from feast import Entity, FeatureService, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast.repo_config import RepoConfig
from feast.types import Bool, Float64, Int64, PrimitiveFeastType, String, UnixTimestamp
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.feature_store.offline_store import STORE_TYPE
from tasks.specs.dataset_spec import DatasetSpec
from deployments.online_reader import OnlineReader, OnlineStoreError
from tasks.feature_store.online_store import STORE_TYPE as ONLINE_STORE_TYPE
from tasks.feature_store.online_store import store_path
from tasks.data.raw_checks import empty_frame

FEAST_TYPES: dict[str, PrimitiveFeastType] = {
    "int64": Int64,
    "Int64": Int64,
    "float64": Float64,
    "bool": Bool,
    "boolean": Bool,
    "string": String,
    "object": String,
}


class FeatureStoreError(ValueError):
    """A feature-store request that cannot be served; the message names what is wrong."""


@dataclass(frozen=True)
class StoreSettings:
    """Where the registry and the online store live (the FeatureRepo block's plain form)."""

    repo_path: str = "features"
    project: str = "mlops"
    registry_path: str = "data/feast/registry.db"
    online_store: Literal["sqlite", "redis"] = "sqlite"
    sqlite_path: str = "data/feast/online_store.db"
    redis_connection_string: str = ""


def view_name(spec: DatasetSpec, table: str) -> str:
    return f"{spec.name}__{table}"


def feature_schema(spec: DatasetSpec, table: str) -> list[Field]:
    """The feature columns a transform produces, read from its output on empty inputs."""
    ft = spec.feature_tables[table]
    meta = spec.transform_fn(table)(*(empty_frame(spec.tables[t]) for t in ft.inputs))
    skip = {*spec.join_keys(ft.entity), spec.timestamp_field}
    fields = []
    for column, dtype in meta.dtypes.items():
        if column in skip:
            continue
        name = "string" if isinstance(dtype, pd.StringDtype) else str(dtype)
        if name.startswith("datetime64"):
            fields.append(Field(name=str(column), dtype=UnixTimestamp))
        elif name in FEAST_TYPES:
            fields.append(Field(name=str(column), dtype=FEAST_TYPES[name]))
        else:
            raise FeatureStoreError(f"feature_tables.{table}: column '{column}' has dtype {name}")
    return fields


def feast_objects(spec: DatasetSpec, features_uri: str) -> list[Any]:
    """Entity, one FeatureView per feature table (source: the data_prep output) and services."""
    label_table = spec.tables[spec.label.table]
    entities = {}
    for name, entity in spec.entities.items():
        key_types = {label_table.columns[k].dtype for k in entity.join_keys}
        value_type = ValueType.INT64 if key_types == {"int64"} else ValueType.STRING
        entities[name] = Entity(name=name, join_keys=list(entity.join_keys), value_type=value_type)
    views: dict[str, FeatureView] = {}
    for table, ft in spec.feature_tables.items():
        source = FileSource(
            name=f"{view_name(spec, table)}__source",
            path=f"{features_uri.rstrip('/')}/{table}",
            timestamp_field=spec.timestamp_field,
        )
        views[table] = FeatureView(
            name=view_name(spec, table),
            entities=[entities[ft.entity]],
            ttl=timedelta(days=ft.ttl_days),
            schema=feature_schema(spec, table),
            source=source,
            online=True,
            description=ft.description,
            tags={"dataset": spec.name},
        )
    services = [
        FeatureService(name=name, features=[views[t] for t in tables], tags={"dataset": spec.name})
        for name, tables in spec.feature_services.items()
    ]
    return [*entities.values(), *views.values(), *services]


def open_store(settings: StoreSettings, online: dict[str, Any] | None = None) -> FeatureStore:
    """A FeatureStore configured in code (local provider, file offline store, the SQLite
    online store of tasks/online_store.py or Feast's Redis store). `online`, a Feast
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
    """`<service>:<sha256>` of the service's views: names, entities, features, dtypes, TTLs.

    Plain data: the serving side compares it without importing Feast.
    """
    fs = _service(store, service)
    views = []
    for projection in sorted(fs.feature_view_projections, key=lambda p: p.name):
        view = store.get_feature_view(projection.name)
        views.append(
            {
                "name": view.name,
                "entities": sorted(view.entities),
                "ttl_s": int(view.ttl.total_seconds()) if view.ttl else 0,
                "features": [[f.name, str(f.dtype)] for f in projection.features],
            }
        )
    digest = hashlib.sha256(json.dumps(views, sort_keys=True).encode()).hexdigest()
    return f"{service}:{digest[:16]}"


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


sync_feature_store_task = task(name="sync-feature-store", cache_policy=NO_CACHE)(sync_feature_store)


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
