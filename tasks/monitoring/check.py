"""One monitoring pass over one model's served traffic and labels (no Prefect here)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.monitoring.accuracy import LiveAccuracy, join_labels, live_accuracy
from tasks.monitoring.detectors import SCORE, Detectors, as_matrix, check_features, check_window
from tasks.monitoring.policy import MonitoringPolicy
from tasks.monitoring.traffic import Watermark, read_traffic, stamp, windows


@dataclass
class ModelCheck:
    model: str
    until: str
    records: int
    skipped: list[str]
    checks: list[dict[str, Any]]  # one per window: version, role and WindowCheck.as_dict()
    insufficient: list[dict[str, Any]]  # streams whose new rows are fewer than min_rows
    accuracy: list[LiveAccuracy]
    labels: int
    unmatched_labels: int
    mark: Watermark  # the watermark to persist once the results are stored
    # per stream, the rows of its newest drifted window (else its last), for the plots
    served: dict[tuple[int, str], np.ndarray] = field(default_factory=dict)

    def drifted(self) -> list[dict[str, Any]]:
        return [c for c in self.checks if c["drift"]]


def check_model(
    log_dir: str | Path,
    model: str,
    mark: Watermark,
    policy: MonitoringPolicy,
    detectors_for: Callable[[int], Detectors],
    now: datetime | None = None,
) -> ModelCheck:
    """Check every new full window of every served (version, role) and the live accuracy.

    `mark` is not changed: the advanced watermark comes back in the result.
    """
    now = now or datetime.now(UTC)
    traffic = read_traffic(log_dir, model, mark, policy.settle_s, now)
    advanced = Watermark(dict(mark.streams), traffic.until)
    checks: list[dict[str, Any]] = []
    insufficient: list[dict[str, Any]] = []
    served: dict[tuple[int, str], np.ndarray] = {}
    drifted_streams: set[tuple[int, str]] = set()
    for stream in traffic.streams:
        cuts, pending = windows(stream.records, policy.window_rows, policy.min_rows)
        if pending:
            insufficient.append(
                {"version": stream.version, "role": stream.role, "rows": len(pending)}
            )
        if cuts:
            detectors = detectors_for(stream.version)
            check_features(detectors, stream.records[0].get("features", {}), stream.version)
        for cut in cuts:
            frame = pd.DataFrame([r["features"] for r in cut])
            frame[SCORE] = [r["score"] for r in cut]
            result = check_window(
                detectors, frame, policy.p_value, str(cut[0]["time"]), str(cut[-1]["time"])
            )
            checks.append({"version": stream.version, "role": stream.role, **result.as_dict()})
            key = (stream.version, stream.role)
            if result.drift or key not in drifted_streams:  # the newest drifted window's rows
                served[key] = as_matrix(frame, detectors.features)
                if result.drift:
                    drifted_streams.add(key)
        advanced.advance(stream.key, [r for cut in cuts for r in cut], pending)
    since = stamp(now - timedelta(days=policy.label_lookback_days))
    joined = join_labels(log_dir, model, since)
    accuracy = live_accuracy(
        joined.frame, policy.labelled_rows, policy.min_labelled, policy.auc_floor
    )
    return ModelCheck(
        model=model,
        until=traffic.until,
        records=sum(len(s.records) for s in traffic.streams),
        skipped=traffic.skipped + joined.skipped,
        checks=checks,
        insufficient=insufficient,
        accuracy=accuracy,
        labels=joined.labels,
        unmatched_labels=joined.unmatched,
        mark=advanced,
        served=served,
    )
