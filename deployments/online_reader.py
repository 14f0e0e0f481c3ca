"""Serving-time feature lookups from the row-per-entity SQLite online store.

Standard library only: the layout (tasks/feature_store/online_store.py writes it) is plain
data, so a process without Feast (the serving environment) reads it the same way. One row per
entity and feature view: the join-key values as JSON text, the event time in microseconds
(`event_us`), the view's values as a JSON object; `_feast_views` holds each view's join keys,
feature types and TTL. A value older than its view's TTL as of the read is missing, as in the
offline store's point-in-time join, and counted.
"""

from __future__ import annotations

import functools
import json
import numbers
import sqlite3
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

VIEWS_TABLE = "_feast_views"
MAX_KEYS_PER_QUERY = 10_000  # SQLite allows 32,766 parameters per statement
# Feast's marker for a null timestamp inside a value
NULL_TIMESTAMP = -9223372036854775808
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def micros(ts: datetime) -> int:
    """Microseconds since the epoch (naive datetimes are UTC)."""
    aware = ts if ts.tzinfo else ts.replace(tzinfo=UTC)
    return (aware - EPOCH) // timedelta(microseconds=1)


class OnlineStoreError(ValueError):
    """A lookup or write the store cannot serve; the message names the view, key or row."""


def table_name(project: str, view: str, stage: str | None = None) -> str:
    """A view's table; a staged one (written, not yet promoted) with `stage`."""
    return f"{project}_{view}__stage_{stage}" if stage else f"{project}_{view}"


def key_value(name: str, value: Any, value_type: str) -> int | str:
    """A join-key value in the store's canonical form (INT64 keys as int, others as str)."""
    if value_type == "INT64":
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise OnlineStoreError(f"join key '{name}': {value!r} is not an integer")
        return int(value)
    if not isinstance(value, str):
        raise OnlineStoreError(f"join key '{name}': {value!r} is not a string")
    return value


@functools.cache
def _quoted(text: str) -> str:
    return json.dumps(text)


def entity_key(pairs: Sequence[tuple[str, int | str]]) -> str:
    """The row key: `[[join_key, value], ...]` sorted by join key, as compact JSON (built by
    hand: json.dumps per key would be a third of a 100-entity lookup)."""
    parts = (
        f"[{_quoted(k)},{v if isinstance(v, int) else json.dumps(v)}]" for k, v in sorted(pairs)
    )
    return "[" + ",".join(parts) + "]"


def _timestamp(seconds: int | None) -> datetime | None:
    """A UnixTimestamp value as Feast's SDK returns it."""
    if seconds is None or seconds == NULL_TIMESTAMP:
        return None
    return datetime.fromtimestamp(seconds, tz=UTC)


class ViewReader:
    """The latest values of some views' features, per entity row: the read shared by the
    stores' layouts (SQLite here, Feast's Redis store in deployments/redis_reader.py).

    A store's reader sets `_views` (view, where it lives, join key types, [(feature, dtype)],
    TTL in us) and answers `_lookup(views, keys)`. `expired` and `missing` count, per view, the
    entity rows whose value was older than the view's TTL, or absent, since the reader was made.
    """

    _views: list[tuple[str, str, dict[str, str], list[tuple[str, str]], int]]

    def __init__(self) -> None:
        self.expired: Counter[str] = Counter()
        self.missing: Counter[str] = Counter()

    def ping(self) -> None:
        """OnlineStoreError unless the store answers (a predictor's health)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the store's connection."""

    def _check(self, features: Mapping[str, Sequence[str]]) -> None:
        seen: dict[str, str] = {}
        for view, _, _, found, _ in self._views:
            for name, _ in found:
                if name in seen:
                    raise OnlineStoreError(
                        f"feature '{name}' is in views '{seen[name]}' and '{view}'"
                    )
                seen[name] = view
        self.join_keys = list(dict.fromkeys(k for _, _, keys, _, _ in self._views for k in keys))
        self.features = list(seen)

    @staticmethod
    def _known(view: str, names: Sequence[str], dtypes: Mapping[str, str]) -> None:
        unknown = [n for n in names if n not in dtypes]
        if unknown:
            raise OnlineStoreError(f"view '{view}' has no feature(s) {unknown}")

    def _key(self, pairs: Sequence[tuple[str, int | str]]) -> Any:
        return entity_key(pairs)

    def _lookup(
        self, views: list[int], keys: list[Any]
    ) -> list[dict[Any, tuple[int, Mapping[str, Any]]]]:
        """Per view (indexes into `_views`, all on the same join keys): key -> (event_us,
        {feature: value}) of the keys present."""
        raise NotImplementedError

    def read(
        self,
        rows: Sequence[Mapping[str, Any]],
        as_of: datetime | None = None,
        gaps: list[tuple[int, str, str]] | None = None,
    ) -> dict[str, list[Any]]:
        """Columns (join keys, then features) for `rows`; None where an entity has no value, or
        only one older than the view's TTL as of `as_of` (default: now). `gaps`, if given,
        receives `(row, view, "missing" | "expired")` for each such value."""
        now_us = micros(as_of or datetime.now(UTC))
        out: dict[str, list[Any]] = {}
        for key in self.join_keys:
            try:
                out[key] = [row[key] for row in rows]
            except KeyError:
                missing = next(i for i, row in enumerate(rows) if key not in row)
                raise OnlineStoreError(f"entity row {missing} lacks join key '{key}'") from None
        by_keys: dict[tuple[tuple[str, str], ...], list[int]] = {}
        for index, (_, _, join_keys, _, _) in enumerate(self._views):
            by_keys.setdefault(tuple(join_keys.items()), []).append(index)
        for signature, views in by_keys.items():
            keys = [self._key([(k, key_value(k, row[k], t)) for k, t in signature]) for row in rows]
            for index, found in zip(
                views, self._lookup(views, list(dict.fromkeys(keys))), strict=True
            ):
                self._columns(index, [found.get(k) for k in keys], now_us, out, gaps)
        return {k: out[k] for k in [*self.join_keys, *self.features]}

    def _columns(
        self,
        index: int,
        stamped: list[tuple[int, Mapping[str, Any]] | None],
        now_us: int,
        out: dict[str, list[Any]],
        gaps: list[tuple[int, str, str]] | None,
    ) -> None:
        view, _, _, features, ttl_us = self._views[index]
        self.missing[view] += sum(v is None for v in stamped)
        if gaps is not None:
            gaps.extend((i, view, "missing") for i, v in enumerate(stamped) if v is None)
        if ttl_us:
            oldest = now_us - ttl_us
            fresh = [None if v is None or v[0] < oldest else v for v in stamped]
            self.expired[view] += sum(v is not None for v in stamped) - sum(
                v is not None for v in fresh
            )
            if gaps is not None:
                gaps.extend(
                    (i, view, "expired")
                    for i, (v, f) in enumerate(zip(stamped, fresh, strict=True))
                    if v is not None and f is None
                )
            stamped = fresh
        values = [None if v is None else v[1] for v in stamped]
        for name, dtype in features:
            column = [None if v is None else v.get(name) for v in values]
            if dtype == "UnixTimestamp":
                column = [_timestamp(v) for v in column]
            out[name] = column


class OnlineReader(ViewReader):
    """Reads the row-per-entity SQLite online store, one query per view."""

    def __init__(
        self,
        path: str | Path,
        project: str,
        features: Mapping[str, Sequence[str]],
        stage: str | None = None,
    ):
        """`features`: view name -> the feature names to return, in order; `stage`: read the
        staged tables of that stage (a materialization not yet promoted)."""
        super().__init__()
        if not Path(path).exists():
            raise OnlineStoreError(f"online store {path} does not exist (materialize first)")
        self._conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        self._views = []
        for view, names in features.items():
            found = self._conn.execute(
                f"SELECT join_keys, features, ttl_s FROM {VIEWS_TABLE} WHERE name = ?",
                (table_name(project, view, stage),),
            ).fetchone()
            if found is None:
                raise OnlineStoreError(f"view '{view}' has no table in online store {path}")
            join_keys, dtypes = json.loads(found[0]), json.loads(found[1])
            self._known(view, names, dtypes)
            ttl_us = int(found[2] or 0) * 1_000_000  # 0: no expiry
            table = table_name(project, view, stage)
            self._views.append((view, table, join_keys, [(n, dtypes[n]) for n in names], ttl_us))
        self._check(features)

    def _lookup(
        self, views: list[int], keys: list[Any]
    ) -> list[dict[Any, tuple[int, Mapping[str, Any]]]]:
        return [self._found(self._views[i][1], keys) for i in views]

    def _found(self, table: str, keys: list[str]) -> dict[Any, tuple[int, Mapping[str, Any]]]:
        """Key -> [event_us, row values] of the keys present. SQLite builds one JSON object of
        the rows, parsed in one call instead of one per row."""
        found: dict[Any, tuple[int, Mapping[str, Any]]] = {}
        for start in range(0, len(keys), MAX_KEYS_PER_QUERY):
            chunk = keys[start : start + MAX_KEYS_PER_QUERY]
            sql = (
                "SELECT '{' || group_concat(json_quote(entity_key) || ':[' || event_us || ','"
                """ || "row" || ']') || '}' """
                f'FROM "{table}" WHERE entity_key IN ({",".join("?" * len(chunk))})'
            )
            (rows,) = self._conn.execute(sql, chunk).fetchone()
            found.update(json.loads(rows) if rows else {})
        return found

    def ping(self) -> None:
        """Read one row of every view's table: OnlineStoreError if the store cannot answer."""
        for view, table, _, _, _ in self._views:
            try:
                self._conn.execute(f'SELECT entity_key FROM "{table}" LIMIT 1').fetchall()
            except sqlite3.Error as exc:
                raise OnlineStoreError(f"view '{view}': online store unreadable: {exc}") from exc

    def close(self) -> None:
        self._conn.close()
