from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from tasks.feature_store.skew import SkewError, enforce_skew, skew_check, sync_feature_store
from tasks.feature_store.store import (
    FeatureStoreError,
    StoreSettings,
    apply_definitions,
    fingerprint,
    materialize,
    online_features,
    open_store,
    training_set,
)

pytestmark = pytest.mark.unit
SERVICE = "credit_risk_default_v1"


def _settings(root: Path) -> StoreSettings:
    return StoreSettings(
        repo_path=str(Path(__file__).resolve().parents[2] / "features"),
        registry_path=str(root / "registry.db"),
        sqlite_path=str(root / "online.db"),
    )


def _ts(day: str) -> pd.Timestamp:
    return pd.Timestamp(day, tz="UTC")


@pytest.fixture
def features(tiny_features: Path, tmp_path: Path) -> Path:
    """A copy of prepared features whose customer 1 has two hand-made window rows."""
    out = tmp_path / "features"
    shutil.copytree(tiny_features, out)
    windows = pd.read_parquet(out / "transaction_windows")
    windows = windows[windows["customer_id"] != 1]
    mine = windows.iloc[:2].copy()
    mine["customer_id"] = 1
    mine["event_timestamp"] = [_ts("2026-01-01"), _ts("2026-01-10")]
    mine["txn_count_7d"] = [1.0, 2.0]
    shutil.rmtree(out / "transaction_windows")
    (out / "transaction_windows").mkdir()
    pd.concat([windows, mine]).to_parquet(
        out / "transaction_windows" / "part-0.parquet", index=False
    )
    return out


@pytest.fixture
def store(credit_spec, features: Path, tmp_path: Path):
    store = open_store(_settings(tmp_path / "feast"))
    apply_definitions(store, credit_spec, str(features))
    return store


def test_point_in_time_join_uses_the_value_as_of_each_row(credit_spec, store) -> None:
    entity_df = pd.DataFrame(
        {
            "customer_id": [1, 1, 1, 1],
            "event_timestamp": [
                _ts("2025-12-31"),  # before any value: nothing from the future leaks in
                _ts("2026-01-05"),  # the Jan 1 value, not the later (latest) Jan 10 one
                _ts("2026-01-10"),  # exactly at a timestamp: that row counts
                _ts("2026-03-01"),  # last value is 50 days old, past the 30-day TTL: null
            ],
            "label": [0, 1, 0, 1],
        }
    )
    out = training_set(store, credit_spec, entity_df, SERVICE)
    assert out["label"].tolist() == [0, 1, 0, 1]  # entity rows kept, in order
    counts = out["txn_count_7d"].tolist()
    assert pd.isna(counts[0]) and counts[1] == 1.0 and counts[2] == 2.0 and pd.isna(counts[3])
    assert out["annual_income"].notna().all()  # profile: 10-year TTL


def test_online_features_after_materialize_and_fingerprint(credit_spec, store, tmp_path) -> None:
    materialize(
        store,
        credit_spec,
        end=datetime(2026, 1, 20, tzinfo=UTC),
        start=datetime(2025, 1, 1, tzinfo=UTC),
    )
    online = online_features(store, credit_spec, SERVICE, [{"customer_id": 1}])
    assert online["txn_count_7d"].iloc[0] == 2.0

    fp = fingerprint(store, SERVICE)
    assert fp.startswith(f"{SERVICE}:") and fp == fingerprint(store, SERVICE)
    other = open_store(_settings(tmp_path / "other"))
    apply_definitions(other, credit_spec, "/elsewhere/features")  # same definitions, other data
    assert fingerprint(other, SERVICE) == fp
    shorter = credit_spec.model_copy(deep=True)
    shorter.feature_tables["transaction_windows"].__dict__["ttl_days"] = 7
    apply_definitions(other, shorter, "/elsewhere/features")
    assert fingerprint(other, SERVICE) != fp


def test_bad_requests_name_what_is_wrong(credit_spec, store) -> None:
    with pytest.raises(FeatureStoreError, match=r"lacks column\(s\) \['event_timestamp'\]"):
        training_set(store, credit_spec, pd.DataFrame({"customer_id": [1]}), SERVICE)
    with pytest.raises(FeatureStoreError, match=r"lacks column\(s\) \['customer_id'\]"):
        training_set(
            store, credit_spec, pd.DataFrame({"event_timestamp": [_ts("2026-01-01")]}), SERVICE
        )
    entity_df = pd.DataFrame({"customer_id": [1], "event_timestamp": [_ts("2026-01-01")]})
    with pytest.raises(
        FeatureStoreError,
        match=r"feature service 'nope' does not exist; known: \['credit_risk_default_v1'\]",
    ):
        training_set(store, credit_spec, entity_df, "nope")
    with pytest.raises(FeatureStoreError, match=r"lack join key\(s\) \['customer_id'\]"):
        online_features(store, credit_spec, SERVICE, [{"id": 1}])


def test_skew_check_finds_online_values_that_disagree(
    credit_spec, features, store, tmp_path
) -> None:
    settings = _settings(tmp_path / "feast")
    now = datetime(2026, 1, 20, tzinfo=UTC)
    reports = sync_feature_store(credit_spec, settings, str(features), now, 0.0)
    assert reports[SERVICE].worst == 0.0 and reports[SERVICE].entities > 0

    # The online store drifts from the offline one (a writer outside the pipeline, say).
    profile = pd.read_parquet(features / "customer_profile")
    signed_up = profile[profile["event_timestamp"] < now]  # the others have no profile yet
    store.write_to_online_store(
        "credit_risk__customer_profile",
        signed_up.assign(annual_income=signed_up["annual_income"] * 2),
    )
    report = skew_check(store, credit_spec, SERVICE, signed_up[["customer_id"]].head(50), now)
    assert report.mismatch_rate["annual_income"] == 1.0 and report.mismatch_rate["age"] == 0.0
    with pytest.raises(
        SkewError, match=r"for 1 feature\(s\): credit_risk_default_v1.annual_income: 100.0%"
    ):
        enforce_skew({SERVICE: report}, 0.05)
    enforce_skew({SERVICE: report}, 1.0)  # within a permissive limit

    # data_prep's next sync re-materializes the whole TTL window and heals the online store
    healed = sync_feature_store(credit_spec, settings, str(features), now, 0.0)
    assert healed[SERVICE].worst == 0.0
