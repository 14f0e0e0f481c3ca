"""Serving-time feature lookups straight from Feast's Redis online store, without Feast.

Feast's Redis layout: one hash per entity, keyed by the serialized entity key (version 3)
followed by the project name; in it, per view, `_ts:<view>` (a protobuf Timestamp) and one
field per feature, named by the 4-byte murmur3 hash of `<view>:<feature>`, holding a
serialized `feast.types.Value`. The views' join keys, feature types and TTLs are not in Feast's
layout: tasks/feature_store/redis_store.py writes them, when Feast applies the views, to the
hash `_mlops_views:<project>`. Views on the same entity share its hash, so a lookup is one
pipelined round trip of HMGETs, whatever the number of views and entities.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import redis

from deployments.online_reader import OnlineStoreError, ViewReader

VIEWS_KEY = "_mlops_views:{project}"
_STRING, _INT64 = 2, 4  # feast.types.ValueType


def murmur3_32(data: bytes, seed: int = 0) -> int:
    """MurmurHash3 x86_32, as the mmh3 package computes it unsigned."""
    c1, c2, mask = 0xCC9E2D51, 0x1B873593, 0xFFFFFFFF
    h = seed
    tail = len(data) & ~3
    for i in range(0, tail, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * c1) & mask
        k = ((k << 15) | (k >> 17)) & mask
        h ^= (k * c2) & mask
        h = ((h << 13) | (h >> 19)) & mask
        h = (h * 5 + 0xE6546B64) & mask
    k = 0
    for i, byte in enumerate(data[tail:]):
        k |= byte << (8 * i)
    if k:
        k = (k * c1) & mask
        k = ((k << 15) | (k >> 17)) & mask
        h ^= (k * c2) & mask
    h ^= len(data)
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & mask
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & mask
    return h ^ (h >> 16)


def feature_field(view: str, feature: str) -> bytes:
    """The hash field of a feature: Feast's `_mmh3`, the hash's 4 little-endian bytes."""
    return struct.pack("<I", murmur3_32(f"{view}:{feature}".encode()))


def redis_key(project: str, pairs: Sequence[tuple[str, int | str]]) -> bytes:
    """Feast's entity key serialization, version 3, followed by the project name."""
    ordered = sorted(pairs)
    out = [struct.pack("<I", len(ordered))]
    for name, _ in ordered:
        out += [struct.pack("<II", _STRING, len(name)), name.encode()]
    for _, value in ordered:
        if isinstance(value, int):
            out.append(struct.pack("<IIq", _INT64, 8, value))
        else:
            raw = value.encode()
            out += [struct.pack("<II", _STRING, len(raw)), raw]
    return b"".join([*out, project.encode()])


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


# feast.types.Value fields: number -> how its payload decodes (scalars only)
# int32, int64, bool, unix_timestamp
_VARINT: dict[int, Callable[[int], Any]] = {3: _signed, 4: _signed, 7: bool, 8: _signed}
_FIXED = {5: ("<d", 8), 6: ("<f", 4)}  # double, float
_NULL = 19


_DOUBLE = struct.Struct("<d").unpack_from
_DOUBLE_TAG, _INT64_TAG = 5 << 3 | 1, 4 << 3  # the one-byte tags of the common cases


def decode_value(data: bytes | None) -> Any:
    """A serialized scalar `feast.types.Value`; None when absent, empty or null."""
    if not data:
        return None
    first = data[0]
    if first == _DOUBLE_TAG:
        return _DOUBLE(data, 1)[0]
    if first == _INT64_TAG:
        return data[1] if len(data) == 2 else _signed(_varint(data, 1)[0])
    tag, pos = _varint(data, 0)
    number, wire = tag >> 3, tag & 7
    if number in _VARINT and wire == 0:
        return _VARINT[number](_varint(data, pos)[0])
    if number in _FIXED:
        fmt, size = _FIXED[number]
        return struct.unpack(fmt, data[pos : pos + size])[0]
    if number in (1, 2) and wire == 2:  # bytes, string
        size, pos = _varint(data, pos)
        raw = data[pos : pos + size]
        return raw.decode() if number == 2 else raw
    if number == _NULL:
        return None
    raise OnlineStoreError(f"feature value of type field {number} is not a scalar this reads")


def decode_timestamp(data: bytes | None) -> int | None:
    """A serialized protobuf Timestamp as microseconds since the epoch."""
    if data is None:
        return None
    seconds = nanos = pos = 0
    while pos < len(data):
        tag, pos = _varint(data, pos)
        value, pos = _varint(data, pos)
        if tag >> 3 == 1:
            seconds = _signed(value)
        elif tag >> 3 == 2:
            nanos = value
    return seconds * 1_000_000 + nanos // 1_000


class RedisOnlineReader(ViewReader):
    """Reads Feast's Redis online store at `url` (redis://[:password@]host:port[/db])."""

    def __init__(
        self, url: str, project: str, features: Mapping[str, Sequence[str]], timeout_s: float = 2
    ):
        super().__init__()
        self._project = project
        self._client = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        try:
            described = self._client.hgetall(VIEWS_KEY.format(project=project))
        except redis.RedisError as exc:
            raise OnlineStoreError(f"Redis online store {_where(url)}: {exc}") from exc
        views = {_text(k): json.loads(v) for k, v in described.items()}
        self._views = []
        self._fields: list[list[bytes]] = []
        for view, names in features.items():
            if view not in views:
                raise OnlineStoreError(
                    f"view '{view}' is not in the Redis online store {_where(url)} "
                    f"(project '{project}': apply and materialize first)"
                )
            join_keys, dtypes = views[view]["join_keys"], views[view]["features"]
            self._known(view, names, dtypes)
            ttl_us = int(views[view].get("ttl_s") or 0) * 1_000_000
            self._views.append((view, view, join_keys, [(n, dtypes[n]) for n in names], ttl_us))
            self._fields.append([f"_ts:{view}".encode(), *(feature_field(view, n) for n in names)])
        self._check(features)

    def _key(self, pairs: Sequence[tuple[str, int | str]]) -> bytes:
        return redis_key(self._project, pairs)

    def _lookup(
        self, views: list[int], keys: list[Any]
    ) -> list[dict[Any, tuple[int, Mapping[str, Any]]]]:
        fields = [f for i in views for f in self._fields[i]]
        try:
            if len(keys) == 1:
                answers = [cast(list[bytes | None], self._client.hmget(keys[0], fields))]
            else:
                with self._client.pipeline(transaction=False) as pipe:
                    for key in keys:
                        pipe.hmget(key, fields)
                    answers = pipe.execute()
        except redis.RedisError as exc:
            raise OnlineStoreError(f"Redis online store: {exc}") from exc
        found: list[dict[Any, tuple[int, Mapping[str, Any]]]] = []
        start = 0
        for index in views:
            names = [n for n, _ in self._views[index][3]]
            width = 1 + len(names)
            view_found: dict[Any, tuple[int, Mapping[str, Any]]] = {}
            for key, answer in zip(keys, answers, strict=True):
                event_us = decode_timestamp(answer[start])
                if event_us is not None:
                    values = answer[start + 1 : start + width]
                    view_found[key] = (
                        event_us,
                        {n: decode_value(v) for n, v in zip(names, values, strict=True)},
                    )
            found.append(view_found)
            start += width
        return found

    def ping(self) -> None:
        try:
            self._client.ping()
        except redis.RedisError as exc:
            raise OnlineStoreError(f"Redis online store unreadable: {exc}") from exc

    def close(self) -> None:
        self._client.close()


def _where(url: str) -> str:
    """The URL without its credentials or query (redis-py reads a password from either)."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rsplit('@', 1)[-1].split('?', 1)[0]}"


def _text(key: bytes | str) -> str:
    return key.decode() if isinstance(key, bytes) else key
