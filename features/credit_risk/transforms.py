"""Feature transforms of the credit-risk dataset: plain pandas in, pandas out.

Each runs on one partition (rows of one customer always together where `partition_by` says
so) and must accept an empty frame, which is how the pipeline learns its output schema.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.credit_risk.generator import HOME, PURPOSES, REGIONS, RISKY_MERCHANTS

KEY = "customer_id"
TS = "event_timestamp"


def encode(values: pd.Series, categories: list[str]) -> pd.Series:
    """Stable integer codes for a categorical column; unknown or missing values get -1."""
    return pd.Series(
        pd.Categorical(values, categories=categories).codes, index=values.index
    ).astype("int64")


def customer_profile(customers: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            KEY: customers[KEY].astype("int64"),
            TS: customers["signup_ts"],
            "region_code": encode(customers["region"], REGIONS),
            "home_ownership_code": encode(customers["home_ownership"], HOME),
            "annual_income": customers["annual_income"].astype("float64"),
            "log_income": np.log1p(customers["annual_income"].astype("float64")),
            "age": customers["age"].astype("int64"),
            "employment_years": customers["employment_years"].astype("float64"),
        }
    )


def transaction_windows(transactions: pd.DataFrame) -> pd.DataFrame:
    """Per customer and active day: counts, sums and rates over trailing 7/30/90-day windows.

    A row is stamped at the end of its day, so no feature uses a transaction from after its
    timestamp. Windows are computed with cumulative sums and a binary search over
    (customer, day), which is linear after the sort.
    """
    tx = transactions
    daily = (
        pd.DataFrame(
            {
                KEY: tx[KEY].to_numpy("int64"),
                "day": tx["event_ts"].dt.floor("D"),
                "n": 1,
                "amount": tx["amount"].to_numpy("float64"),
                "declined": tx["declined"].to_numpy("int64"),
                "online": tx["is_online"].to_numpy("int64"),
                "risky": tx["merchant_category"].isin(RISKY_MERCHANTS).to_numpy("int64"),
            }
        )
        .groupby([KEY, "day"], sort=True)
        .sum()
        .reset_index()
    )
    keys = daily[KEY].to_numpy()
    days = (daily["day"].to_numpy("datetime64[ns]").astype("datetime64[D]")).astype("int64")
    position = np.unique(keys, return_inverse=True)[1].astype("int64") * 10_000_000 + days
    sums = {c: daily[c].to_numpy("float64") for c in ("n", "amount", "declined", "online", "risky")}
    out = {KEY: keys, TS: daily["day"] + pd.Timedelta(days=1)}
    for window in (7, 30, 90):
        start = np.searchsorted(position, position - window + 1, side="left")
        win = {c: _window_sum(v, start) for c, v in sums.items()}
        out[f"txn_count_{window}d"] = win["n"]
        out[f"amount_sum_{window}d"] = win["amount"]
        if window != 7:
            out[f"declined_rate_{window}d"] = win["declined"] / win["n"]
            out[f"online_share_{window}d"] = win["online"] / win["n"]
            out[f"risky_share_{window}d"] = win["risky"] / win["n"]
    out["amount_mean_30d"] = out["amount_sum_30d"] / out["txn_count_30d"]
    return pd.DataFrame(out)


def _window_sum(values: np.ndarray, start: np.ndarray) -> np.ndarray:
    csum = np.concatenate([[0.0], np.cumsum(values)])
    return csum[1:] - csum[start]


def application_features(applications: pd.DataFrame, customers: pd.DataFrame) -> pd.DataFrame:
    """Loan features and ratios against the applicant's profile (customers are broadcast)."""
    profile = customers[[KEY, "annual_income", "age"]]
    apps = applications.merge(profile, on=KEY, how="left")
    income = apps["annual_income"].astype("float64")
    loan = apps["loan_amount"].astype("float64")
    term = apps["term_months"].astype("float64")
    return pd.DataFrame(
        {
            KEY: apps[KEY].astype("int64"),
            TS: apps["application_ts"],
            "loan_amount": loan,
            "term_months": apps["term_months"].astype("int64"),
            "purpose_code": encode(apps["purpose"], PURPOSES),
            "missed_payments_12m": apps["missed_payments_12m"].astype("int64"),
            "loan_to_income": loan / income,
            "payment_to_income": (loan / term) / (income / 12),
        }
    )
