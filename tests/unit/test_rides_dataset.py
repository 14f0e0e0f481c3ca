"""The second dataset (Feast's own generators: two entities, mixed UTC offsets, random label)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from pathlib import Path

import dask
import pandas as pd
import pytest

from features.rides.generator import generate
from tasks.data.preprocess import build_features, plan_sources
from tasks.feature_store.store import (
    StoreSettings,
    apply_definitions,
    materialize,
    online_features,
    open_store,
    training_set,
)
from tasks.specs.dataset_spec import GenerateOptions
from tasks.specs.datasets import get_dataset, list_datasets

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def rides(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rides")
    generate(
        str(root / "raw"),
        GenerateOptions(rows=2_000, seed=3, start=date(2026, 5, 1), end=date(2026, 6, 30)),
    )
    spec = get_dataset("rides")
    with dask.config.set(scheduler="sync"):
        build_features(
            spec,
            plan_sources(spec, str(root / "raw")),
            str(root / "out"),
            pd.Timestamp("2026-11-29", tz="UTC"),
        )
    return root


def test_generator_is_deterministic_and_messy(rides: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    generate(
        str(again),
        GenerateOptions(rows=2_000, seed=3, start=date(2026, 5, 1), end=date(2026, 6, 30)),
    )
    for table in ("drivers", "customers", "orders"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(rides / "raw" / table), pd.read_parquet(again / table)
        )
    offsets = pd.read_parquet(rides / "raw" / "orders")["event_timestamp"].str[-6:].unique()
    assert len(offsets) > 1  # mixed UTC offsets in the source


def test_data_prep_normalises_offsets_and_keeps_both_entity_keys(rides: Path) -> None:
    raw = pd.read_parquet(rides / "raw" / "orders")
    labels = pd.read_parquet(rides / "out" / "features" / "labels")
    assert labels.columns.tolist() == [
        "driver_id",
        "customer_id",
        "event_timestamp",
        "order_is_success",
    ]
    assert str(labels["event_timestamp"].dtype) == "datetime64[ns, UTC]"
    expected = pd.to_datetime(raw["event_timestamp"], utc=True, format="mixed")
    assert labels["event_timestamp"].sort_values().tolist() == expected.sort_values().tolist()


def test_training_set_joins_two_entities_point_in_time(rides: Path, tmp_path: Path) -> None:
    spec = get_dataset("rides")
    store = open_store(
        StoreSettings(
            repo_path=str(ROOT / "features"),
            registry_path=str(tmp_path / "r.db"),
            sqlite_path=str(tmp_path / "o.db"),
        )
    )
    apply_definitions(store, spec, str(rides / "out" / "features"))
    labels = pd.read_parquet(rides / "out" / "features" / "labels")
    train = training_set(store, spec, labels, "rides_success_v1")
    assert len(train) == len(labels)
    assert train["conv_rate"].notna().mean() > 0.9 and train["current_balance"].notna().mean() > 0.9
    materialize(store, spec, end=datetime(2026, 6, 30, tzinfo=UTC))
    row = labels.iloc[0]
    online = online_features(
        store,
        spec,
        "rides_success_v1",
        [{"driver_id": int(row.driver_id), "customer_id": int(row.customer_id)}],
        as_of=datetime(2026, 6, 29, 12, tzinfo=UTC),  # within the hourly stats' 1-day TTL
    )
    assert online["conv_rate"].notna().all()


def test_platform_code_names_no_dataset_column() -> None:
    columns = {c for spec in list_datasets() for t in spec.tables.values() for c in t.columns}
    columns |= {spec.label.column for spec in list_datasets()}
    assert {"customer_id", "driver_id", "order_is_success", "amount"} <= columns
    code = "\n".join(
        p.read_text() for folder in ("flows", "tasks") for p in (ROOT / folder).rglob("*.py")
    )
    found = sorted(
        c for c in columns if re.search(rf"\b{re.escape(c)}\b", code) and c != "event_timestamp"
    )
    assert found == []
