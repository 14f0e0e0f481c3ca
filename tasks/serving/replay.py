"""Replaying a dataset's scoring rows to a served model: as a client would, with latencies, the
outcomes back through the feedback endpoint, and a background sender for canary windows."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.serving.local_target import http_json
from tasks.specs.dataset_spec import DatasetSpec


def scoring_fields(spec: DatasetSpec, service: str) -> list[str]:
    """What a scoring request of `service` carries: the join keys and the request fields."""
    return [*spec.service_keys(service), *spec.service_request_fields(service)]


def label_rows(
    raw: Path | str, spec: DatasetSpec, since: pd.Timestamp | None = None, seed: int = 0
) -> pd.DataFrame:
    """The label table's rows (at or after `since`), in one shuffle: slices of it are disjoint
    samples."""
    label = spec.label
    frame = pd.read_parquet(Path(raw) / spec.tables[label.table].path)
    if since is not None:
        frame = frame[frame[spec.tables[label.table].timestamp] >= since]
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)


@dataclass
class Replayed:
    """What a replay saw: request latencies (s) and the rows answered."""

    latencies: list[float] = field(default_factory=list)
    rows: int = 0
    labelled: int = 0

    def percentile(self, q: float) -> float | None:
        return float(np.percentile(self.latencies, q)) if self.latencies else None


def replay(
    url: str,
    rows: pd.DataFrame,
    fields: list[str],
    label: str | None = None,
    batch: int = 1,
    on_batch: Callable[[int], None] | None = None,
) -> Replayed:
    """POST `rows[fields]` in batches of `batch` rows; with `label`, that column goes back as
    each answer's truth through the feedback endpoint. Any answer but 200 raises."""
    seen = Replayed()
    for start in range(0, len(rows), batch):
        part = rows.iloc[start : start + batch]
        body = {"jsonData": {"rows": json.loads(part[fields].to_json(orient="records"))}}
        began = time.perf_counter()
        status, answer = http_json(f"{url}/api/v1.0/predictions", body)
        seen.latencies.append(time.perf_counter() - began)
        if status != 200:
            raise RuntimeError(f"{url}: prediction answered {status}: {answer}")
        seen.rows += len(part)
        if label is not None:
            truth = {"data": {"ndarray": [[int(v)] for v in part[label]]}}
            status, answer = http_json(
                f"{url}/api/v1.0/feedback", {"response": answer, "truth": truth}
            )
            if status != 200:
                raise RuntimeError(f"{url}: feedback answered {status}: {answer}")
            seen.labelled += len(part)
        if on_batch is not None:
            on_batch(len(part))
    return seen


class Traffic:
    """A client sending one row at a time, round the given rows, until stopped; counts the
    answers' statuses and times the answered ones (a canary's window needs live traffic)."""

    def __init__(self, url: str, rows: list[dict[str, Any]], pause_s: float = 0.02) -> None:
        self.url, self.rows, self.pause_s = f"{url}/api/v1.0/predictions", rows, pause_s
        self.statuses: Counter[object] = Counter()
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            body = {"jsonData": {"rows": [self.rows[i % len(self.rows)]]}}
            began = time.perf_counter()
            status: int | str
            try:
                status, _ = http_json(self.url, body, timeout=10)
            except OSError as exc:
                status = type(exc).__name__
            if status == 200:
                self.latencies.append(time.perf_counter() - began)
            self.statuses[status] += 1
            i += 1
            self._stop.wait(self.pause_s)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
