"""The Feast-free reader's view of Feast's Redis layout, against Feast's own encoders."""

from __future__ import annotations

import pytest
from feast.infra.online_stores.helpers import _mmh3, _redis_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Null, Value
from google.protobuf.timestamp_pb2 import Timestamp

from deployments.redis_reader import (
    decode_timestamp,
    decode_value,
    feature_field,
    murmur3_32,
    redis_key,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "text", ["", "a", "ab", "abc", "abcd", "credit_risk__windows:txn_count_7d", "zoë:ü" * 7]
)
def test_murmur3_is_feasts_field_hash(text: str) -> None:
    import mmh3

    assert murmur3_32(text.encode()) == mmh3.hash(text, signed=False)
    if ":" in text:
        assert feature_field(*text.split(":", 1)) == _mmh3(text)


@pytest.mark.parametrize(
    "pairs",
    [
        [("customer_id", 12)],
        [("customer_id", -(2**62))],
        [("b", "x y"), ("a", 3)],
        [("zone", "zoë")],
        [("k", 2**62), ("j", "")],
    ],
)
def test_entity_keys_are_feasts_serialization_v3(pairs) -> None:
    proto = EntityKey(
        join_keys=[k for k, _ in pairs],
        entity_values=[
            Value(int64_val=v) if isinstance(v, int) else Value(string_val=v) for _, v in pairs
        ],
    )
    assert redis_key("mlops", pairs) == _redis_key(
        "mlops", proto, entity_key_serialization_version=3
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Value(int64_val=-5), -5),
        (Value(int64_val=2**62), 2**62),
        (Value(int32_val=-7), -7),
        (Value(double_val=-1.25e300), -1.25e300),
        (Value(float_val=0.5), 0.5),
        (Value(bool_val=True), True),
        (Value(bool_val=False), False),
        (Value(string_val="zoë"), "zoë"),
        (Value(string_val=""), ""),
        (Value(unix_timestamp_val=1_700_000_000), 1_700_000_000),
        (Value(null_val=Null.NULL), None),
        (Value(), None),
    ],
)
def test_values_decode_as_feast_wrote_them(value: Value, expected) -> None:
    assert decode_value(value.SerializeToString()) == expected


def test_timestamps_decode_to_microseconds() -> None:
    assert (
        decode_timestamp(Timestamp(seconds=1_700_000_000).SerializeToString())
        == 1_700_000_000_000_000
    )
    assert decode_timestamp(Timestamp(seconds=5, nanos=7_000).SerializeToString()) == 5_000_007
    assert decode_timestamp(None) is None
