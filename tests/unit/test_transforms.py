from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.credit_risk.on_demand import application_features
from features.credit_risk.transforms import customer_profile, encode, transaction_windows
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


def _customers(ids=range(1, 7)) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": list(ids),
            "signup_ts": pd.Timestamp("2024-12-20 13:45", tz="UTC"),
        }
    )


def _recount(tx: pd.DataFrame, customer: int, at: pd.Timestamp, days: int) -> pd.DataFrame:
    """Independently: the customer's transactions on the `days` whole days before `at`'s day."""
    day = at.floor("D")
    mine = tx[tx.customer_id == customer]
    return mine[(mine.event_ts >= day - pd.Timedelta(days=days)) & (mine.event_ts < day)]


def _as_of(windows: pd.DataFrame, customer: int, at: pd.Timestamp) -> pd.Series | None:
    rows = windows[(windows.customer_id == customer) & (windows.event_timestamp <= at)]
    return None if rows.empty else rows.sort_values("event_timestamp").iloc[-1]


def test_windows_at_random_as_of_times_equal_a_recount_from_the_raw_events() -> None:
    """The latest row at or before any time t holds exactly the events of each window before
    t's day: idle periods included (counts fall to 0), nothing from after t."""
    tx = _transactions()
    # customer 6 never buys; the others go idle after mid-year
    tx = tx[tx.event_ts < pd.Timestamp("2025-06-15", tz="UTC")]
    windows = transaction_windows(tx, _customers())
    rng = np.random.default_rng(11)
    start = pd.Timestamp("2024-12-21", tz="UTC")
    for offset in rng.integers(0, 400 * 86_400, 150):
        at = start + pd.Timedelta(seconds=int(offset))
        for customer in range(1, 7):
            row = _as_of(windows, customer, at)
            assert row is not None  # from signup on there is always a value
            for days in (7, 30, 90):
                events = _recount(tx, customer, at, days)
                assert row[f"txn_count_{days}d"] == len(events), (customer, at, days)
                assert row[f"amount_sum_{days}d"] == pytest.approx(events.amount.sum(), abs=1e-6)
            events30 = _recount(tx, customer, at, 30)
            if len(events30):
                assert row.declined_rate_30d == pytest.approx(events30.declined.mean())
                assert row.risky_share_30d == pytest.approx(
                    (events30.merchant_category == "gambling").mean()
                )
            else:
                assert np.isnan(row.declined_rate_30d)  # a rate over nothing is unknown


def test_an_idle_customer_reads_zero_once_the_window_has_passed() -> None:
    tx = _transactions()
    last = tx[tx.customer_id == 1].event_ts.max()
    tx = tx[(tx.customer_id != 1) | (tx.event_ts <= last)]
    windows = transaction_windows(tx, _customers())
    three_weeks = _as_of(windows, 1, last + pd.Timedelta(days=21))
    assert three_weeks is not None
    assert three_weeks.txn_count_7d == 0 and three_weeks.amount_sum_7d == 0.0
    assert three_weeks.txn_count_30d > 0
    later = _as_of(windows, 1, last + pd.Timedelta(days=200))
    assert later is not None and later.txn_count_90d == 0


def test_windows_do_not_depend_on_row_order() -> None:
    tx = _transactions()
    a = transaction_windows(tx, _customers())
    b = transaction_windows(tx.sample(frac=1.0, random_state=1), _customers())
    pd.testing.assert_frame_equal(a, b)


def test_transforms_accept_empty_frames(credit_spec) -> None:
    tables = {name: empty_frame(t) for name, t in credit_spec.tables.items()}
    assert len(transaction_windows(tables["transactions"], tables["customers"])) == 0
    assert "region_code" in customer_profile(tables["customers"]).columns


def test_encoding_is_stable_and_unknowns_are_minus_one() -> None:
    codes = encode(pd.Series(["b", "zz", None, "a"]), ["a", "b"])
    assert codes.tolist() == [1, -1, -1, 0]


def test_on_demand_ratios_use_the_applicant_income() -> None:
    out = application_features(
        {
            "loan_amount": [10_000.0, 5_000.0, 1_000.0, 1_000.0],
            "term_months": [12, 60, 12, 12],
            "purpose": ["car", "other", "yacht", None],
            "annual_income": [40_000.0, 50_000.0, None, 0.0],
        }
    )
    assert out["loan_to_income"][:2] == [0.25, 0.1]
    assert out["payment_to_income"][0] == pytest.approx((10_000 / 12) / (40_000 / 12))
    assert out["purpose_code"] == [2, 5, -1, -1]
    assert np.isnan(out["loan_to_income"][2]) and np.isnan(out["loan_to_income"][3])
