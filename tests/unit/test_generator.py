from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.credit_risk.generator import generate_demo
from tasks.specs.dataset_spec import GenerateOptions

pytestmark = pytest.mark.unit


def _read(root: Path, table: str) -> pd.DataFrame:
    return pd.read_parquet(root / table)


def test_deterministic_by_seed_and_sized(tmp_path: Path) -> None:
    a = generate_demo(str(tmp_path / "a"), GenerateOptions(rows=20_000, seed=1, chunk_rows=5_000))
    generate_demo(str(tmp_path / "b"), GenerateOptions(rows=20_000, seed=1, chunk_rows=5_000))
    generate_demo(str(tmp_path / "c"), GenerateOptions(rows=20_000, seed=2, chunk_rows=5_000))
    assert a["transactions"] == 20_000 and a["customers"] == 500
    assert len(list((tmp_path / "a" / "transactions").glob("*.parquet"))) == 4
    for table in ("customers", "transactions", "applications"):
        pd.testing.assert_frame_equal(_read(tmp_path / "a", table), _read(tmp_path / "b", table))
    assert not _read(tmp_path / "a", "transactions").equals(_read(tmp_path / "c", "transactions"))


def test_label_is_learnable_from_observable_features(tmp_path: Path) -> None:
    generate_demo(str(tmp_path), GenerateOptions(rows=200_000, seed=3))
    apps = _read(tmp_path, "applications").merge(_read(tmp_path, "customers"), on="customer_id")
    rate = apps["defaulted_90d"].mean()
    assert 0.03 < rate < 0.25
    by_missed = apps.groupby(apps["missed_payments_12m"].clip(upper=3))["defaulted_90d"].mean()
    assert by_missed.is_monotonic_increasing  # more missed payments, more defaults
    lti = apps["loan_amount"] / apps["annual_income"]
    high, low = apps[lti > lti.quantile(0.8)], apps[lti < lti.quantile(0.2)]
    assert high["defaulted_90d"].mean() > 1.5 * low["defaulted_90d"].mean()


def test_covariate_drift_shifts_only_after_the_date(tmp_path: Path) -> None:
    start = date(2026, 1, 1)
    generate_demo(str(tmp_path / "base"), GenerateOptions(rows=50_000, seed=4))
    generate_demo(
        str(tmp_path / "drift"),
        GenerateOptions(rows=50_000, seed=4, drift_start=start, covariate_drift=("amount",)),
    )
    base, drift = (
        _read(tmp_path / "base", "transactions"),
        _read(tmp_path / "drift", "transactions"),
    )
    after = base["event_ts"] >= pd.Timestamp(start, tz="UTC")
    assert np.allclose(base.loc[~after, "amount"], drift.loc[~after, "amount"])
    assert drift.loc[after, "amount"].median() > 1.5 * base.loc[after, "amount"].median()
    pd.testing.assert_frame_equal(
        _read(tmp_path / "base", "applications"), _read(tmp_path / "drift", "applications")
    )


def test_concept_drift_changes_the_label_relation_not_the_features(tmp_path: Path) -> None:
    start = date(2025, 10, 1)
    generate_demo(str(tmp_path / "base"), GenerateOptions(rows=200_000, seed=5))
    generate_demo(
        str(tmp_path / "drift"),
        GenerateOptions(rows=200_000, seed=5, drift_start=start, concept_drift=True),
    )
    base, drift = (
        _read(tmp_path / "base", "applications"),
        _read(tmp_path / "drift", "applications"),
    )
    pd.testing.assert_frame_equal(
        base.drop(columns="defaulted_90d"), drift.drop(columns="defaulted_90d")
    )
    after = drift["application_ts"] >= pd.Timestamp(start, tz="UTC")
    assert (base.loc[~after, "defaulted_90d"] == drift.loc[~after, "defaulted_90d"]).all()
    # after the date, missed payments no longer raise the risk
    corr_base = base.loc[after, ["missed_payments_12m", "defaulted_90d"]].corr().iloc[0, 1]
    corr_drift = drift.loc[after, ["missed_payments_12m", "defaulted_90d"]].corr().iloc[0, 1]
    assert corr_base > 0.1 and corr_drift < 0.0


def test_bad_options_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown column.*'colour'"):
        generate_demo(
            str(tmp_path),
            GenerateOptions(
                rows=5_000, seed=0, drift_start=date(2026, 1, 1), covariate_drift=("colour",)
            ),
        )
    with pytest.raises(ValueError, match="need a drift_start"):
        generate_demo(str(tmp_path), GenerateOptions(rows=5_000, seed=0, concept_drift=True))
