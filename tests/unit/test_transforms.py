from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.credit_risk.transforms import (
    application_features,
    customer_profile,
    encode,
    transaction_windows,
)
from tasks.specs.dataset_spec import empty_frame

pytestmark = pytest.mark.unit


def _transactions(seed: int = 3, n: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ts = pd.Timestamp("2025-01-01", tz="UTC") + pd.to_timedelta(
        rng.integers(0, 200 * 86400, n), "s"
    )
    return pd.DataFrame(
        {
            "txn_id": np.arange(n),
            "customer_id": rng.integers(1, 6, n),
            "event_ts": ts,
            "amount": rng.uniform(1, 100, n).round(2),
            "merchant_category": rng.choice(["grocery", "gambling", "travel"], n),
            "is_online": rng.random(n) < 0.3,
            "declined": rng.random(n) < 0.1,
        }
    )


def test_windows_match_a_brute_force_count_and_never_see_the_future() -> None:
    tx = _transactions()
    out = transaction_windows(tx)
    for row in out.sample(40, random_state=0).itertuples():
        cutoff = row.event_timestamp  # end of the active day
        mine = tx[tx.customer_id == row.customer_id]
        for days in (7, 30, 90):
            window = mine[
                (mine.event_ts < cutoff) & (mine.event_ts >= cutoff - pd.Timedelta(days=days))
            ]
            assert getattr(row, f"txn_count_{days}d") == len(window)
            assert getattr(row, f"amount_sum_{days}d") == pytest.approx(window.amount.sum())
        window30 = mine[
            (mine.event_ts < cutoff) & (mine.event_ts >= cutoff - pd.Timedelta(days=30))
        ]
        assert row.risky_share_30d == pytest.approx(
            (window30.merchant_category == "gambling").mean()
        )
        assert row.declined_rate_30d == pytest.approx(window30.declined.mean())


def test_windows_do_not_depend_on_row_order() -> None:
    tx = _transactions()
    a = transaction_windows(tx)
    b = transaction_windows(tx.sample(frac=1.0, random_state=1))
    pd.testing.assert_frame_equal(a, b)


def test_transforms_accept_empty_frames(credit_spec) -> None:
    tables = {name: empty_frame(t) for name, t in credit_spec.tables.items()}
    assert len(transaction_windows(tables["transactions"])) == 0
    assert "region_code" in customer_profile(tables["customers"]).columns
    assert "loan_to_income" in application_features(tables["applications"], tables["customers"])


def test_encoding_is_stable_and_unknowns_are_minus_one() -> None:
    codes = encode(pd.Series(["b", "zz", None, "a"]), ["a", "b"])
    assert codes.tolist() == [1, -1, -1, 0]


def test_ratios_use_the_applicant_income() -> None:
    apps = pd.DataFrame(
        {
            "customer_id": [1, 2],
            "application_ts": pd.to_datetime(["2025-03-01", "2025-03-02"], utc=True),
            "loan_amount": [10_000.0, 5_000.0],
            "term_months": [12, 60],
            "purpose": ["car", "other"],
            "missed_payments_12m": [0, 2],
        }
    )
    customers = pd.DataFrame(
        {"customer_id": [2, 1], "annual_income": [50_000.0, 40_000.0], "age": [30, 40]}
    )
    out = application_features(apps, customers)
    assert out["loan_to_income"].tolist() == [0.25, 0.1]
    assert out["payment_to_income"].iloc[0] == pytest.approx((10_000 / 12) / (40_000 / 12))
