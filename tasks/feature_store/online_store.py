"""A Feast online store on SQLite with one row per entity and feature view.

Feast's own SQLite store keeps a row per entity *and feature*, each value a protobuf: a
100-entity lookup reads ~1,600 rows, ~3 ms in SQL alone before Feast's Python SDK adds its
own. Here a row holds the view's values as JSON (layout in deployments/online_reader.py, which
reads it without Feast), and `_feast_views` each view's join keys, feature types and TTL.
Feast's SDK, `feast materialize` and `feast serve` use it through the OnlineStore interface.
The last write wins, as in Feast's SQLite store.

With `stage` set in the config, writes go to staged tables: data_prep materializes a new
snapshot there, invisible to readers, and `promote` swaps all views in one transaction.

    online_store: {type: tasks.feature_store.online_store.RowSqliteOnlineStore, path: ...}
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from contextlib import closing
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from feast import Entity, FeatureView
from feast.infra.online_stores.online_store import OnlineStore
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.repo_config import FeastConfigBaseModel, RepoConfig
from pydantic import StrictStr

from deployments.online_reader import (
    EPOCH,
    MAX_KEYS_PER_QUERY,
    NULL_TIMESTAMP,
    VIEWS_TABLE,
    OnlineStoreError,
    entity_key,
    micros,
    table_name,
)

STORE_TYPE = "tasks.feature_store.online_store.RowSqliteOnlineStore"
# feature dtype -> the ValueProto field holding it
VALUE_FIELDS = {
    "Int64": "int64_val",
    "Int32": "int32_val",
    "Float64": "double_val",
    "Float32": "float_val",
    "String": "string_val",
    "Bool": "bool_val",
    "UnixTimestamp": "unix_timestamp_val",
}
LAYOUT = ["entity_key", "event_us", "written_us", "row"]
KEY_FIELDS = {"int64_val": "INT64", "int32_val": "INT64", "string_val": "STRING"}
VIEWS_COLUMNS = {"ttl_s": "INTEGER NOT NULL DEFAULT 0", "snapshot": "TEXT"}
PREVIOUS = "__previous"


class RowSqliteOnlineStoreConfig(FeastConfigBaseModel):
    type: Literal["tasks.feature_store.online_store.RowSqliteOnlineStore"] = (
        "tasks.feature_store.online_store.RowSqliteOnlineStore"
    )
    path: StrictStr = "data/online_store.db"
    # when set, writes go to staged tables that `promote` makes live in one transaction
    stage: StrictStr | None = None


def store_path(config: RepoConfig) -> Path:
    """The database file; a relative path is relative to the Feast repository."""
    path = Path(config.online_store.path)
    return path if path.is_absolute() or not config.repo_path else config.repo_path / path


def _table(config: RepoConfig, view: str) -> str:
    """The table a store config writes a view to: live, or staged."""
    return table_name(config.project, view, getattr(config.online_store, "stage", None))


def _schema(table: FeatureView) -> dict[str, str]:
    dtypes = {f.name: str(f.dtype) for f in table.features}
    unsupported = {n: t for n, t in dtypes.items() if t not in VALUE_FIELDS}
    if unsupported:
        raise OnlineStoreError(f"view '{table.name}': dtypes {unsupported} are not supported")
    return dtypes


def _key(proto: EntityKeyProto) -> tuple[str, dict[str, str]]:
    pairs, types = [], {}
    for name, value in zip(proto.join_keys, proto.entity_values, strict=True):
        kind = value.WhichOneof("val")
        if kind not in KEY_FIELDS:
            raise OnlineStoreError(f"join key '{name}': {kind} values are not supported")
        pairs.append((name, getattr(value, kind)))
        types[name] = KEY_FIELDS[kind]
    return entity_key(pairs), types


def _plain(value: ValueProto) -> Any:
    kind = value.WhichOneof("val")
    plain = getattr(value, kind) if kind else None
    return None if kind == "unix_timestamp_val" and plain == NULL_TIMESTAMP else plain


def connect(path: Path) -> sqlite3.Connection:
    """A writer's connection: WAL (readers never wait on a materialization), the views table
    made, or brought to the current layout."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {VIEWS_TABLE} "
        "(name TEXT PRIMARY KEY, join_keys TEXT NOT NULL, features TEXT NOT NULL)"
    )
    have = {r[1] for r in conn.execute(f"PRAGMA table_info({VIEWS_TABLE})")}
    for column, kind in VIEWS_COLUMNS.items():
        if column not in have:  # a store written before TTLs and snapshots were kept
            conn.execute(f"ALTER TABLE {VIEWS_TABLE} ADD COLUMN {column} {kind}")
    return conn


def _exists(conn: sqlite3.Connection, name: str) -> bool:
    found = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,))
    return found.fetchone() is not None


def _rename(conn: sqlite3.Connection, old: str, new: str) -> None:
    conn.execute(f'DROP TABLE IF EXISTS "{new}"')
    conn.execute(f"DELETE FROM {VIEWS_TABLE} WHERE name = ?", (new,))
    if _exists(conn, old):
        conn.execute(f'ALTER TABLE "{old}" RENAME TO "{new}"')
    conn.execute(f"UPDATE {VIEWS_TABLE} SET name = ? WHERE name = ?", (new, old))


def promote(path: Path, project: str, views: list[str], stage: str, snapshot: str) -> None:
    """Make the staged tables live, in one transaction; the live ones are kept as previous
    (`restore_previous` undoes the promotion, `drop_previous` makes it final)."""
    with closing(connect(path)) as conn, conn:
        for view in views:
            live = table_name(project, view)
            staged = table_name(project, view, stage)
            if not _exists(conn, staged):
                raise OnlineStoreError(f"view '{view}' has no staged table for stage {stage}")
            _rename(conn, live, live + PREVIOUS)
            _rename(conn, staged, live)
            conn.execute(f"UPDATE {VIEWS_TABLE} SET snapshot = ? WHERE name = ?", (snapshot, live))


def restore_previous(path: Path, project: str, views: list[str]) -> None:
    """Undo `promote`, in one transaction: the previous tables are live again."""
    with closing(connect(path)) as conn, conn:
        for view in views:
            live = table_name(project, view)
            if _exists(conn, live + PREVIOUS):
                _rename(conn, live + PREVIOUS, live)


def drop_previous(path: Path, project: str, views: list[str]) -> None:
    with closing(connect(path)) as conn, conn:
        for view in views:
            _drop(conn, table_name(project, view) + PREVIOUS)


def discard_stage(path: Path, project: str, views: list[str], stage: str) -> None:
    if not path.exists():
        return
    with closing(connect(path)) as conn, conn:
        for view in views:
            _drop(conn, table_name(project, view, stage))


def published_snapshots(path: Path, project: str, views: list[str]) -> dict[str, str | None]:
    """The snapshot each view's live table was promoted from (None: not by `promote`)."""
    with closing(connect(path)) as conn:
        out = {}
        for view in views:
            found = conn.execute(
                f"SELECT snapshot FROM {VIEWS_TABLE} WHERE name = ?", (table_name(project, view),)
            ).fetchone()
            out[view] = found[0] if found else None
        return out


def _drop(conn: sqlite3.Connection, name: str) -> None:
    conn.execute(f'DROP TABLE IF EXISTS "{name}"')
    conn.execute(f"DELETE FROM {VIEWS_TABLE} WHERE name = ?", (name,))


class RowSqliteOnlineStore(OnlineStore):
    _conn: sqlite3.Connection | None = None

    def _connection(self, config: RepoConfig) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = connect(store_path(config))
        return self._conn

    def _ensure_table(self, config: RepoConfig, table: FeatureView, join_keys: dict[str, str]):
        name = _table(config, table.name)
        conn = self._connection(config)
        columns = [r[1] for r in conn.execute(f'PRAGMA table_info("{name}")')]
        if columns and columns != LAYOUT:
            # another layout (Feast's own SQLite store): materialize refills the new table
            conn.execute(f'DROP TABLE "{name}"')
        conn.execute(
            f'CREATE TABLE IF NOT EXISTS "{name}" (entity_key TEXT PRIMARY KEY, '
            'event_us INTEGER NOT NULL, written_us INTEGER, "row" TEXT NOT NULL) WITHOUT ROWID'
        )
        ttl_s = int(table.ttl.total_seconds()) if table.ttl else 0
        conn.execute(
            f"INSERT INTO {VIEWS_TABLE} (name, join_keys, features, ttl_s) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET join_keys = excluded.join_keys, "
            "features = excluded.features, ttl_s = excluded.ttl_s",
            (name, json.dumps(join_keys), json.dumps(_schema(table)), ttl_s),
        )

    def online_write_batch(
        self,
        config: RepoConfig,
        table: FeatureView,
        data: list[tuple[EntityKeyProto, dict[str, ValueProto], datetime, datetime | None]],
        progress: Callable[[int], Any] | None,
    ) -> None:
        if not data:
            return
        rows, join_keys = [], dict[str, str]()
        for proto, values, event_time, written_time in data:
            key, join_keys = _key(proto)
            row = json.dumps({n: _plain(v) for n, v in values.items()}, separators=(",", ":"))
            written = micros(written_time) if written_time else None
            rows.append((key, micros(event_time), written, row))
        name = _table(config, table.name)
        conn = self._connection(config)
        with conn:
            self._ensure_table(config, table, join_keys)
            conn.executemany(
                f'INSERT INTO "{name}" VALUES (?, ?, ?, ?) ON CONFLICT(entity_key) DO UPDATE SET '
                'event_us = excluded.event_us, written_us = excluded.written_us, "row" = '
                'excluded."row"',
                rows,
            )
        if progress:
            progress(len(data))

    def online_read(
        self,
        config: RepoConfig,
        table: FeatureView,
        entity_keys: list[EntityKeyProto],
        requested_features: list[str] | None = None,
    ) -> list[tuple[datetime | None, dict[str, ValueProto] | None]]:
        name = _table(config, table.name)
        keys = [_key(proto)[0] for proto in entity_keys]
        conn = self._connection(config)
        exists = conn.execute(f"SELECT 1 FROM {VIEWS_TABLE} WHERE name = ?", (name,)).fetchone()
        if not exists:
            return [(None, None)] * len(keys)
        unique, found = list(set(keys)), {}
        for start in range(0, len(unique), MAX_KEYS_PER_QUERY):
            chunk = unique[start : start + MAX_KEYS_PER_QUERY]
            sql = (
                f'SELECT entity_key, event_us, "row" FROM "{name}" '
                f"WHERE entity_key IN ({','.join('?' * len(chunk))})"
            )
            found.update({k: (ts, row) for k, ts, row in conn.execute(sql, chunk)})
        dtypes = _schema(table)
        wanted = requested_features or list(dtypes)
        result: list[tuple[datetime | None, dict[str, ValueProto] | None]] = []
        for key in keys:
            if key not in found:
                result.append((None, None))
                continue
            ts, row = found[key]
            plain = json.loads(row)
            values = {}
            for feature in wanted:
                value = plain.get(feature)
                values[feature] = (
                    ValueProto()
                    if value is None
                    else ValueProto(**{VALUE_FIELDS[dtypes[feature]]: value})
                )
            result.append((EPOCH + timedelta(microseconds=ts), values))
        return result

    def update(
        self,
        config: RepoConfig,
        tables_to_delete: Sequence[FeatureView],
        tables_to_keep: Sequence[FeatureView],
        entities_to_delete: Sequence[Entity],
        entities_to_keep: Sequence[Entity],
        partial: bool,
    ) -> None:
        conn = self._connection(config)
        with conn:
            for table in tables_to_delete:
                _drop(conn, _table(config, table.name))
            for table in tables_to_keep:
                join_keys = {c.name: _key_type(c.dtype) for c in table.entity_columns}
                self._ensure_table(config, table, join_keys)

    def teardown(
        self,
        config: RepoConfig,
        tables: Sequence[FeatureView],
        entities: Sequence[Entity],
    ) -> None:
        conn = self._connection(config)
        with conn:
            for table in tables:
                _drop(conn, _table(config, table.name))


def _key_type(dtype: Any) -> str:
    return "INT64" if str(dtype) in ("Int64", "Int32") else "STRING"
