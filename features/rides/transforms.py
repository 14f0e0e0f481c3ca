"""Feature transforms of the rides dataset: typed copies of Feast's generated stats."""

from __future__ import annotations

import pandas as pd


def driver_hourly(drivers: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "driver_id": drivers["driver_id"].astype("int64"),
            "event_timestamp": drivers["event_timestamp"],
            "conv_rate": drivers["conv_rate"].astype("float64"),
            "acc_rate": drivers["acc_rate"].astype("float64"),
            "avg_daily_trips": drivers["avg_daily_trips"].astype("int64"),
        }
    )


def customer_daily(customers: pd.DataFrame) -> pd.DataFrame:
    trips = customers["lifetime_trip_count"].astype("float64")
    return pd.DataFrame(
        {
            "customer_id": customers["customer_id"].astype("int64"),
            "event_timestamp": customers["event_timestamp"],
            "current_balance": customers["current_balance"].astype("float64"),
            "avg_passenger_count": customers["avg_passenger_count"].astype("float64"),
            "lifetime_trip_count": customers["lifetime_trip_count"].astype("int64"),
            "balance_per_trip": customers["current_balance"].astype("float64")
            / trips.where(trips > 0),
        }
    )
