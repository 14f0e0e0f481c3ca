from __future__ import annotations

import shutil
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deployments.fingerprint import changed_views
from features.credit_risk.on_demand import application_features
from tasks.data.publish import current_snapshot, seal
from tasks.feature_store.skew import SkewError, enforce_skew, skew_check
from tasks.feature_store.store import (
    FeatureStoreError,
    StoreSettings,
    apply_definitions,
    feature_set,
    fingerprint,
    materialize,
    online_features,
    open_store,
    training_set,
)
from tasks.feature_store.sync import publish_snapshot

pytestmark = pytest.mark.unit
SERVICE = "credit_risk_default_v1"
ROOT = Path(__file__).resolve().parents[2]


def _settings(root: Path) -> StoreSettings:
    return StoreSettings(
        repo_path=str(ROOT / "features"),
        registry_path=str(root / "registry.db"),
        sqlite_path=str(root / "online.db"),
    )


def _ts(day: str) -> pd.Timestamp:
    return pd.Timestamp(day, tz="UTC")


def _with_ttl(spec, table: str, days: int):
    copy = spec.model_copy(deep=True)
    copy.feature_tables[table].__dict__["ttl_days"] = days  # frozen model: a test-only edit
    return copy


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
    mine["txn_count_7d"] = [1, 2]
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
                _ts("2026-03-01"),  # the newest row holds until the next one
            ],
            "label": [0, 1, 0, 1],
        }
    )
    out = training_set(store, credit_spec, entity_df, SERVICE, stored_only=True)
    assert out["label"].tolist() == [0, 1, 0, 1]  # entity rows kept, in order
    counts = out["txn_count_7d"].tolist()
    assert pd.isna(counts[0]) and counts[1:] == [1, 2, 2]
    assert out["annual_income"].notna().all()  # profile: 10-year TTL


def test_values_past_their_ttl_are_missing_online_and_offline(
    credit_spec, features, tmp_path
) -> None:
    """Customer 1's newest window row is stamped Jan 10; with a 7-day TTL it is valid on
    Jan 15 and expired on Jan 20, in the offline join and in the online read alike."""
    spec = _with_ttl(credit_spec, "transaction_windows", 7)
    store = open_store(_settings(tmp_path / "feast"))
    apply_definitions(store, spec, str(features))
    # materialized on Jan 11; read as the days pass
    materialize(
        store, spec, end=datetime(2026, 1, 11, tzinfo=UTC), start=datetime(2016, 1, 1, tzinfo=UTC)
    )
    for day, expected in (("2026-01-15", 2), ("2026-01-20", None)):
        entity_df = pd.DataFrame({"customer_id": [1], "event_timestamp": [_ts(day)]})
        offline = training_set(store, spec, entity_df, SERVICE, stored_only=True)
        online = online_features(store, spec, SERVICE, [{"customer_id": 1}], _ts(day))
        for side in (offline, online):
            value = side["txn_count_7d"].iloc[0]
            assert pd.isna(value) if expected is None else value == expected, (day, side)
        assert online["annual_income"].notna().all()  # the profile's TTL is 10 years


def test_the_reader_counts_expired_and_missing_values(credit_spec, features, tmp_path) -> None:
    from tasks.feature_store.store import online_reader

    spec = _with_ttl(credit_spec, "transaction_windows", 7)
    store = open_store(_settings(tmp_path / "feast"))
    apply_definitions(store, spec, str(features))
    materialize(
        store, spec, end=datetime(2026, 1, 11, tzinfo=UTC), start=datetime(2016, 1, 1, tzinfo=UTC)
    )
    reader = online_reader(store, SERVICE)
    out = reader.read([{"customer_id": 1}, {"customer_id": 10**9}], as_of=_ts("2026-01-20"))
    assert out["txn_count_7d"] == [None, None]
    assert reader.expired["credit_risk__transaction_windows"] == 1
    assert reader.missing["credit_risk__transaction_windows"] == 1
    assert reader.missing["credit_risk__customer_profile"] == 1


def test_on_demand_features_through_feast_are_the_function_itself(credit_spec, store) -> None:
    """Feast's on-demand view (python mode) computes training features with the very function
    the model server calls: the same values, bit for bit."""
    entity_df = pd.DataFrame(
        {
            "customer_id": [1, 2, 3, 10**9],  # the last has no profile: no income
            "event_timestamp": [_ts("2026-01-05")] * 4,
            "loan_amount": [10_000.0, 2_500.5, 0.0, 5_000.0],
            "term_months": [12, 36, 60, 24],
            "purpose": ["car", "medical", "nope", None],
            "missed_payments_12m": [0, 1, 2, 3],
        }
    )
    out = training_set(store, credit_spec, entity_df, SERVICE)
    expected = application_features(
        {
            **{c: entity_df[c].tolist() for c in ("loan_amount", "term_months", "purpose")},
            "annual_income": out["annual_income"].tolist(),
        }
    )
    assert out["purpose_code"].tolist() == expected["purpose_code"] == [2, 4, -1, -1]
    for column in ("loan_to_income", "payment_to_income"):
        np.testing.assert_array_equal(out[column].to_numpy(), np.asarray(expected[column]))
    assert np.isnan(out["loan_to_income"].iloc[3])  # no income: unknown, not inf
    with pytest.raises(FeatureStoreError, match=r"lacks column\(s\) \['loan_amount'"):
        training_set(store, credit_spec, entity_df[["customer_id", "event_timestamp"]], SERVICE)


def test_fingerprint_sees_definitions_and_transform_code(
    credit_spec, store, tmp_path, monkeypatch
) -> None:
    fp, views = feature_set(store, SERVICE)
    assert fp.startswith(f"{SERVICE}:") and fp == fingerprint(store, SERVICE)
    other = open_store(_settings(tmp_path / "other"))
    apply_definitions(other, credit_spec, "/elsewhere/features")  # same definitions, other data
    assert fingerprint(other, SERVICE) == fp

    apply_definitions(other, _with_ttl(credit_spec, "transaction_windows", 7), "/x/features")
    assert fingerprint(other, SERVICE) != fp
    assert changed_views(views, feature_set(other, SERVICE)[1]) == [
        "credit_risk__transaction_windows"
    ]

    # One line of the window transform changed, in a copy of the module the spec points to.
    source = (ROOT / "features" / "credit_risk" / "transforms.py").read_text()
    edited = source.replace(
        '"amount": tx["amount"].to_numpy("float64"),',
        '"amount": tx["amount"].to_numpy("float64") * 1.0,',
    )
    assert edited != source
    (tmp_path / "edited_transforms.py").write_text(edited)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("edited_transforms", None)
    spec = credit_spec.model_copy(deep=True)
    spec.feature_tables["transaction_windows"].__dict__["transform"] = (
        "edited_transforms:transaction_windows"
    )
    apply_definitions(other, spec, "/x/features")
    assert fingerprint(other, SERVICE) != fp
    assert changed_views(views, feature_set(other, SERVICE)[1]) == [
        "credit_risk__transaction_windows"
    ]


def test_bad_requests_name_what_is_wrong(credit_spec, store) -> None:
    with pytest.raises(FeatureStoreError, match=r"lacks column\(s\) \['event_timestamp'"):
        training_set(store, credit_spec, pd.DataFrame({"customer_id": [1]}), SERVICE)
    with pytest.raises(FeatureStoreError, match=r"lacks column\(s\) \['customer_id'"):
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


def _snapshot(features: Path, output: Path, snapshot: str) -> None:
    """Lay prepared tables out as a sealed (unpublished) snapshot of `output`."""
    staging = output / "snapshots" / f".staging-{snapshot}"
    shutil.copytree(features, staging / "features")
    seal(str(staging), str(output), snapshot)


def test_skew_check_finds_online_values_that_disagree(credit_spec, features, tmp_path) -> None:
    settings = _settings(tmp_path / "feast")
    output = tmp_path / "out"
    now = datetime(2026, 1, 20, tzinfo=UTC)
    _snapshot(features, output, "s1")
    reports = publish_snapshot(credit_spec, settings, str(output), "s1", now, 0.0)
    assert reports[SERVICE].worst == 0.0 and reports[SERVICE].entities > 0
    assert current_snapshot(str(output)) == "s1"

    # The online store drifts from the offline one (a writer outside the pipeline, say).
    store = open_store(settings)
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

    # data_prep's next publish rebuilds the online tables from the snapshot and heals them
    _snapshot(features, output, "s2")
    healed = publish_snapshot(credit_spec, settings, str(output), "s2", now, 0.0)
    assert healed[SERVICE].worst == 0.0 and current_snapshot(str(output)) == "s2"


def _recount(source: pd.DataFrame, key: int, at: pd.Timestamp, ttl_days: int, column: str):
    """The latest value at or before `at` within the TTL, from the raw rows, one by one."""
    rows = source[
        (source["customer_id"] == key)
        & (source["event_timestamp"] <= at)
        & (source["event_timestamp"] >= at - pd.Timedelta(days=ttl_days))
    ]
    return rows.sort_values("event_timestamp")[column].iloc[-1] if len(rows) else None


def test_a_join_in_key_partitions_is_the_whole_join_and_an_independent_recount(
    credit_spec, features, tmp_path, monkeypatch
) -> None:
    from blocks import FeatureRepo
    from tasks.feature_store import offline_store

    windows = pd.read_parquet(features / "transaction_windows")
    rng = np.random.default_rng(7)
    start, end = windows["event_timestamp"].min(), windows["event_timestamp"].max()
    n = 2_000
    entity_df = pd.DataFrame(
        {
            "customer_id": rng.choice([*windows["customer_id"].unique(), 10**9], n),
            "event_timestamp": start
            + pd.to_timedelta(rng.uniform(-30, (end - start).days + 30, n), unit="D"),
            "row": np.arange(n),
        }
    )
    whole_store = open_store(_settings(tmp_path / "whole"))
    assert FeatureRepo(retrieval_memory_mb=0.05).settings().retrieval_memory_mb == 0.05
    small = open_store(
        replace(
            _settings(tmp_path / "small"),
            retrieval_memory_mb=0.01,
            spill_dir=str(tmp_path / "spill"),
        )
    )
    (tmp_path / "spill").mkdir()
    for s in (whole_store, small):
        apply_definitions(s, credit_spec, str(features))
    spilled: list[int] = []
    real = offline_store._ViewJoin.in_partitions

    def spy(self, entities, first, last, parts, spill_dir, executor):
        spilled.append(parts)
        assert spill_dir == str(tmp_path / "spill")
        return real(self, entities, first, last, parts, spill_dir, executor)

    whole = training_set(whole_store, credit_spec, entity_df, SERVICE, stored_only=True)
    assert spilled == []  # within the default budget: one pass
    monkeypatch.setattr(offline_store._ViewJoin, "in_partitions", spy)
    parts = training_set(small, credit_spec, entity_df, SERVICE, stored_only=True)
    assert len(spilled) == 2 and min(spilled) > 1  # both views, in key partitions
    assert not list((tmp_path / "spill").iterdir())  # the spill files are gone
    assert parts["row"].tolist() == list(range(n))  # every entity row, in order
    pd.testing.assert_frame_equal(parts, whole, check_dtype=False)
    ttl = credit_spec.feature_tables["transaction_windows"].ttl_days
    for i in rng.choice(n, 150, replace=False):
        key, at = entity_df.loc[i, "customer_id"], entity_df.loc[i, "event_timestamp"]
        expected = _recount(windows, key, at, ttl, "txn_count_7d")
        got = parts.loc[i, "txn_count_7d"]
        assert (pd.isna(got) and expected is None) or got == expected, (key, at, got, expected)


def test_key_partitions_join_on_a_dask_cluster(credit_spec, features, tmp_path) -> None:
    from distributed import Client, LocalCluster, get_task_stream

    entity_df = pd.DataFrame(
        {
            "customer_id": np.arange(1, 301) % 120 + 1,
            "event_timestamp": pd.Timestamp("2026-01-15", tz="UTC")
            - pd.to_timedelta(np.arange(300), unit="D"),
        }
    )
    here = open_store(replace(_settings(tmp_path / "here"), retrieval_memory_mb=0.01))
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True) as cluster,
        Client(cluster) as client,
    ):
        there = open_store(
            replace(
                _settings(tmp_path / "there"),
                retrieval_memory_mb=0.01,
                retrieval_dask_address=cluster.scheduler_address,
            )
        )
        for s in (here, there):
            apply_definitions(s, credit_spec, str(features))
        local = training_set(here, credit_spec, entity_df, SERVICE, stored_only=True)
        with get_task_stream(client) as stream:
            remote = training_set(there, credit_spec, entity_df, SERVICE, stored_only=True)
        merged = [t for t in stream.data if "merge_partition" in str(t["key"])]
    assert len(merged) > 2  # the partitions were joined on the cluster's workers
    pd.testing.assert_frame_equal(remote, local)
