"""Feature transforms of the credit-risk dataset: plain pandas in, pandas out.

Each runs on one partition (rows of one customer always together where `partition_by` says
so) and must accept an empty frame, which is how the pipeline learns its output schema.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.credit_risk.vocabulary import HOME, REGIONS, RISKY_MERCHANTS
from tasks.data.windows import trailing_windows

KEY = "customer_id"
TS = "event_timestamp"
WINDOWS = (7, 30, 90)


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


def transaction_windows(transactions: pd.DataFrame, customers: pd.DataFrame) -> pd.DataFrame:
    """Card activity over trailing 7, 30 and 90 whole days: counts, sums and rates.

    A row wherever a window changes (a transaction enters or leaves it) and at each customer's
    signup, so as of any time the values count exactly the transactions of the window: 0 for
    an idle customer once the window has passed (tasks/data/windows.py). Rates are NaN over an
    empty window.
    """
    tx = transactions
    events = pd.DataFrame(
        {
            KEY: tx[KEY].to_numpy("int64"),
            "ts": tx["event_ts"],
            "amount": tx["amount"].to_numpy("float64"),
            "declined": tx["declined"].to_numpy("float64"),
            "online": tx["is_online"].to_numpy("float64"),
            "risky": tx["merchant_category"].isin(RISKY_MERCHANTS).to_numpy("float64"),
        }
    )
    sums = {
        "n": None,
        "amount": "amount",
        "declined": "declined",
        "online": "online",
        "risky": "risky",
    }
    win = trailing_windows(
        events, KEY, "ts", sums, WINDOWS, anchors=customers, anchor_time="signup_ts", stamp=TS
    )
    out = {KEY: win[KEY], TS: win[TS]}
    with np.errstate(divide="ignore", invalid="ignore"):
        for w in WINDOWS:
            n = win[f"n_{w}d"]
            out[f"txn_count_{w}d"] = n
            out[f"amount_sum_{w}d"] = win[f"amount_{w}d"]
            if w != 7:
                rate = n.where(n > 0).astype("float64")
                out[f"declined_rate_{w}d"] = win[f"declined_{w}d"] / rate
                out[f"online_share_{w}d"] = win[f"online_{w}d"] / rate
                out[f"risky_share_{w}d"] = win[f"risky_{w}d"] / rate
        out["amount_mean_30d"] = win["amount_30d"] / win["n_30d"].where(win["n_30d"] > 0)
    return pd.DataFrame(out)
