"""The row-per-entity SQLite online store and its Feast-free reader, against Feast's own store."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from feast import FeatureStore

from deployments.online_reader import OnlineReader, OnlineStoreError, entity_key
from tasks.feature_store.store import (
    FeatureStoreError,
    StoreSettings,
    apply_definitions,
    materialize,
    online_features,
    online_reader,
    open_store,
    stored_features,
    stored_refs,
)

pytestmark = pytest.mark.unit
SERVICE = "credit_risk_default_v1"
END = datetime(2026, 1, 20, tzinfo=UTC)


def _settings(root: Path) -> StoreSettings:
    return StoreSettings(
        repo_path=str(Path(__file__).resolve().parents[2] / "features"),
        registry_path=str(root / "registry.db"),
        sqlite_path=str(root / "online.db"),
    )


@pytest.fixture
def stores(credit_spec, tiny_features: Path, tmp_path: Path) -> tuple[FeatureStore, FeatureStore]:
    """The same features materialized into our store and into Feast's built-in SQLite store."""
    ours = open_store(_settings(tmp_path / "ours"))
    feast_sqlite = {"type": "sqlite", "path": str(tmp_path / "feast" / "online.db")}
    theirs = open_store(_settings(tmp_path / "feast"), online=feast_sqlite)
    for store in (ours, theirs):
        apply_definitions(store, credit_spec, str(tiny_features))
        materialize(store, credit_spec, end=END, start=datetime(2020, 1, 1, tzinfo=UTC))
    return ours, theirs


def test_lookups_equal_feasts_own_sqlite_store(credit_spec, stores, tiny_features) -> None:
    ours, theirs = stores
    customers = pd.read_parquet(tiny_features / "customer_profile")["customer_id"].unique()
    rows = [{"customer_id": int(c)} for c in customers[:150]] + [{"customer_id": 10**9}]
    expected = theirs.get_online_features(features=_refs(theirs), entity_rows=rows).to_df()
    fast = online_features(ours, credit_spec, SERVICE, rows)  # OnlineReader, no Feast SDK
    through_feast = ours.get_online_features(  # Feast's SDK over our store's online_read
        features=_refs(ours), entity_rows=rows
    ).to_df()
    assert sorted(fast.columns) == sorted(expected.columns)  # Feast's order is a set's
    assert fast.iloc[:-1].notna().any().all() and fast.iloc[-1].drop("customer_id").isna().all()
    pd.testing.assert_frame_equal(fast[expected.columns], expected, check_dtype=False)
    pd.testing.assert_frame_equal(through_feast[expected.columns], expected, check_dtype=False)


def test_reader_errors_name_what_is_wrong(credit_spec, stores, tmp_path) -> None:
    ours, _ = stores
    reader = online_reader(ours, SERVICE)
    assert reader.join_keys == ["customer_id"] and "annual_income" in reader.features
    with pytest.raises(OnlineStoreError, match="entity row 1 lacks join key 'customer_id'"):
        reader.read([{"customer_id": 1}, {"id": 2}])
    with pytest.raises(OnlineStoreError, match="join key 'customer_id': 'abc' is not an integer"):
        reader.read([{"customer_id": "abc"}])
    path = ours.config.online_store.path
    with pytest.raises(OnlineStoreError, match="view 'nope' has no table in online store"):
        OnlineReader(path, "mlops", {"nope": ["x"]})
    with pytest.raises(OnlineStoreError, match=r"has no feature\(s\) \['x'\]"):
        OnlineReader(path, "mlops", {"credit_risk__customer_profile": ["x"]})
    with pytest.raises(OnlineStoreError, match="does not exist"):
        OnlineReader(tmp_path / "missing.db", "mlops", {})
    with pytest.raises(FeatureStoreError, match="feature service 'x' does not exist"):
        online_reader(ours, "x")


@pytest.mark.parametrize(
    "pairs",
    [[("customer_id", 12)], [("b", 'x"y'), ("a", -3)], [("id", "zoë")], [("k", 2**62)]],
)
def test_entity_keys_are_canonical_json(pairs) -> None:
    assert entity_key(pairs) == json.dumps(sorted(pairs), separators=(",", ":"))


def test_large_lookups_span_several_queries(credit_spec, stores, tiny_features, monkeypatch):
    ours, _ = stores
    reader = online_reader(ours, SERVICE)
    customers = pd.read_parquet(tiny_features / "customer_profile")["customer_id"].unique()
    rows = [{"customer_id": int(c)} for c in customers]
    whole = reader.read(rows)
    through_feast = online_features_sdk(ours, rows)
    monkeypatch.setattr("deployments.online_reader.MAX_KEYS_PER_QUERY", 7)
    monkeypatch.setattr("tasks.feature_store.online_store.MAX_KEYS_PER_QUERY", 7)
    assert len(rows) > 7 * 3 and reader.read(rows) == whole
    assert online_features_sdk(ours, rows).equals(through_feast)


def online_features_sdk(store: FeatureStore, rows: list[dict]) -> pd.DataFrame:
    return store.get_online_features(features=_refs(store), entity_rows=rows).to_df()


def _refs(store: FeatureStore) -> list[str]:
    """The service's stored features (its on-demand ones need request data)."""
    return stored_refs(stored_features(store, SERVICE))


def test_tables_of_feasts_layout_are_replaced(credit_spec, stores, tiny_features, tmp_path):
    """An online store file written by Feast's own SQLite store (before this layout) is taken
    over: apply replaces its tables and the next materialize fills them."""
    ours, theirs = stores
    rows = [{"customer_id": c} for c in range(1, 30)]
    expected = online_features(ours, credit_spec, SERVICE, rows)
    settings = _settings(tmp_path / "ours")
    moved = open_store(replace(settings, sqlite_path=theirs.config.online_store.path))
    apply_definitions(moved, credit_spec, str(tiny_features))
    materialize(moved, credit_spec, end=END, start=datetime(2020, 1, 1, tzinfo=UTC))
    pd.testing.assert_frame_equal(online_features(moved, credit_spec, SERVICE, rows), expected)
