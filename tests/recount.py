"""An independent recount of trailing-window counts from raw transactions: a plain join and
filter, nothing shared with the window code. Used by the tests and, on the demo data, by hand:

    .venv/bin/python -m tests.recount data/credit_risk
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from blocks import FeatureRepo
from tasks.data.publish import LABELS, features_uri
from tasks.feature_store.store import labelled_set, snapshot_store
from tasks.specs.datasets import get_dataset

SERVICE = "credit_risk_default_v1"


def recount(
    raw: Path, output: Path, snapshot: str | None, labels: pd.DataFrame, days: int
) -> pd.Series:
    """Per labelled row, the customer's accepted transactions on the `days` whole days before
    the row's day (rows quarantined by the run that made `snapshot` are not accepted)."""
    tx = pd.read_parquet(raw / "transactions", columns=["txn_id", "customer_id", "event_ts"])
    rejected = [
        pd.read_parquet(p, columns=["txn_id"])["txn_id"].astype("int64")
        for p in output.glob(f"quarantine/{snapshot}/transactions/*")
    ]
    if rejected:
        tx = tx[~tx["txn_id"].isin(pd.concat(rejected))]
    rows = labels[["customer_id", "event_timestamp"]].reset_index(names="row")
    day = rows["event_timestamp"].dt.floor("D")
    rows = rows.assign(start=day - pd.Timedelta(days=days), end=day)
    joined = rows.merge(tx, on="customer_id", how="left")
    inside = (joined["event_ts"] >= joined["start"]) & (joined["event_ts"] < joined["end"])
    return inside.groupby(joined["row"]).sum().reindex(rows["row"], fill_value=0)


def compare(raw: Path, output: Path, settings) -> dict[str, int]:
    """Training-set values of txn_count_7d / 30d against the recount, every labelled row;
    returns the number of rows compared and of mismatches per window."""
    spec = get_dataset("credit_risk")
    store, snapshot = snapshot_store(settings, str(output))
    labels = pd.read_parquet(f"{features_uri(str(output), snapshot)}/{LABELS}")
    frame = labelled_set(store, spec, labels, SERVICE)
    out = {"rows": len(frame)}
    for days in (7, 30):
        mine = frame[f"txn_count_{days}d"].to_numpy()
        truth = recount(raw, output, snapshot, labels, days).to_numpy()
        out[f"mismatches_{days}d"] = int((mine != truth).sum())
    return out


if __name__ == "__main__":
    root = Path(sys.argv[1])
    print(compare(root / "raw", root, FeatureRepo().settings()))
