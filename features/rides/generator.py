"""Ride-hailing data from Feast's own test-data generators (`feast.driver_test_data`).

Drivers' hourly stats, customers' daily profiles and orders whose label `order_is_success` is
random by construction. Order timestamps come with mixed UTC offsets, written as text the way
a messy export would; data_prep normalises them. Deterministic by seed.
"""

from __future__ import annotations

from datetime import datetime, time

import fsspec
import numpy as np
import pandas as pd
from feast import driver_test_data

from tasks.progress import progress
from tasks.specs.dataset_spec import GenerateOptions

ORDERS_PER_DRIVER = 200
ORDERS_PER_CUSTOMER = 100


def generate(out_uri: str, options: GenerateOptions) -> dict[str, int]:
    """Write drivers/, customers/ and orders/ (one Parquet file each) under `out_uri`."""
    if options.drift_start is not None:
        raise ValueError("the rides dataset has no drift mode")
    np.random.seed(options.seed)  # Feast's generators draw from numpy's global RNG
    start = datetime.combine(options.start, time(), tzinfo=pd.Timestamp(0, tz="UTC").tzinfo)
    end = datetime.combine(options.end, time(), tzinfo=start.tzinfo)
    drivers = list(range(5001, 5001 + max(5, options.rows // ORDERS_PER_DRIVER)))
    customers = list(range(1001, 1001 + max(5, options.rows // ORDERS_PER_CUSTOMER)))
    orders = driver_test_data.create_orders_df(customers, drivers, start, end, options.rows)
    orders["event_timestamp"] = orders["event_timestamp"].map(lambda ts: ts.isoformat())
    orders["order_is_success"] = orders["order_is_success"].astype("int64")
    tables = {
        "drivers": driver_test_data.create_driver_hourly_stats_df(drivers, start, end),
        "customers": driver_test_data.create_customer_daily_profile_df(customers, start, end),
        "orders": orders,
    }
    for name in ("drivers", "customers"):  # Feast stamps `created` with the wall clock
        stats = tables[name]
        stats["created"] = (stats["event_timestamp"] + pd.Timedelta(minutes=5)).dt.tz_localize(None)
    fs, root = fsspec.core.url_to_fs(out_uri)
    with progress("rides: writing tables", len(tables)) as bar:
        for name, frame in tables.items():
            fs.makedirs(f"{root}/{name}", exist_ok=True)
            with fs.open(f"{root}/{name}/part-00000.parquet", "wb") as fh:
                frame.to_parquet(fh, index=False)
            bar.advance()
    return {name: len(frame) for name, frame in tables.items()}
