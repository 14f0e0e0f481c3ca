"""Live accuracy: labels that arrive later, joined to the predictions they belong to.

Labels come from the feedback endpoint (the labels log) and from files for bulk back-fill; both
are joined to the request log by (request id, row). A label for a request the log does not hold
is counted, never fatal. Per served (version, role): AUC, Brier and ECE over the last N labelled
predictions, in prediction-time order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deployments.request_log import LABELS, REQUESTS, SegmentWriter, read_log, utc_now
from tasks.validation.metrics import metrics

LABEL_COLUMNS = ("request_id", "label")


@dataclass
class LiveAccuracy:
    version: int
    role: str
    labelled: int  # labelled predictions the metrics cover (at most the policy's N)
    auc: float
    brier: float
    ece: float
    positive_rate: float
    below_floor: bool
    enough: bool

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass
class Joined:
    frame: pd.DataFrame  # version, role, time, score, label
    labels: int
    unmatched: int  # labels whose request id (and row) the request log does not hold
    skipped: list[str]


def join_labels(log_dir: str | Path, model: str, since: str) -> Joined:
    """The model's predictions since `since` that have a label (the newest label wins)."""
    labels = read_log(Path(log_dir) / LABELS, LABELS, since=since)
    requests = read_log(Path(log_dir) / REQUESTS, REQUESTS, since=since)
    columns = ["request_id", "row", "version", "role", "time", "score"]
    served = pd.DataFrame(
        [
            [
                r.get("request_id"),
                r.get("row", 0),
                r.get("version"),
                r.get("role"),
                r["time"],
                r.get("score"),
            ]
            for r in requests.records
            if r.get("model") == model and "time" in r
        ],
        columns=columns,
    )
    got = pd.DataFrame(
        [
            [str(r["request_id"]), int(r.get("row", 0)), str(r.get("time", "")), r["label"]]
            for r in labels.records
            if "request_id" in r and "label" in r and r.get("model") in (None, model)
        ],
        columns=["request_id", "row", "label_time", "label"],
    )
    got = got.sort_values("label_time", kind="stable")  # equal stamps: the later line wins
    got = got.drop_duplicates(["request_id", "row"], keep="last")
    served["row"] = served["row"].astype("int64")
    served["request_id"] = served["request_id"].astype(str)
    joined = served.merge(got, on=["request_id", "row"], how="inner")
    matched = got.merge(served[["request_id", "row"]].drop_duplicates(), on=["request_id", "row"])
    frame = joined[["version", "role", "time", "score", "label"]].sort_values("time")
    return Joined(
        frame.reset_index(drop=True),
        len(got),
        len(got) - len(matched),
        labels.skipped + requests.skipped,
    )


def live_accuracy(
    joined: pd.DataFrame, last: int, minimum: int, auc_floor: float
) -> list[LiveAccuracy]:
    """Metrics per served (version, role) over its last `last` labelled predictions."""
    out = []
    for (version, role), group in joined.groupby(["version", "role"], sort=True):
        tail = group.tail(last)
        labels = tail["label"].to_numpy("float64")
        scores = tail["score"].to_numpy("float64")
        values = metrics(labels, scores)
        enough = len(tail) >= minimum and not np.isnan(values["auc"])
        out.append(
            LiveAccuracy(
                version=int(version),
                role=str(role),
                labelled=len(tail),
                auc=values["auc"],
                brier=values["brier"],
                ece=values["ece"],
                positive_rate=float(labels.mean()),
                below_floor=enough and values["auc"] < auc_floor,
                enough=enough,
            )
        )
    return out


def import_labels(path: str | Path, log_dir: str | Path, model: str) -> int:
    """Append a labels file (CSV or Parquet: request_id, label, optional row) to the labels log,
    the bulk back-fill path; returns the rows written. Bad files are refused whole."""
    source = Path(path)
    if source.suffix == ".parquet":
        frame = pd.read_parquet(source)
    elif source.suffix == ".csv":
        frame = pd.read_csv(source, dtype={"request_id": str})
    else:
        raise ValueError(f"{source}: labels must be a .csv or .parquet file")
    missing = [c for c in LABEL_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}; needs request_id, label[, row]")
    labels = pd.to_numeric(frame["label"], errors="coerce")
    bad = frame.index[labels.isna() | frame["request_id"].isna()]
    if len(bad):
        raise ValueError(
            f"{source}: row {int(bad[0])}: label must be a number and request_id set "
            f"({len(bad)} bad row(s)); nothing was written"
        )
    rows = frame["row"].astype("int64") if "row" in frame.columns else pd.Series(0, frame.index)
    now = utc_now()
    writer = SegmentWriter(Path(log_dir) / LABELS, LABELS)
    try:
        writer.append(
            {"request_id": str(rid), "row": int(r), "time": now, "label": float(v), "model": model}
            for rid, r, v in zip(frame["request_id"], rows, labels, strict=True)
        )
    finally:
        writer.close()
    return len(frame)
