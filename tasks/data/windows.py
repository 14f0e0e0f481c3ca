"""Trailing-window aggregates that mean what their names say as of any time.

A window transform that emits one row per active day leaves an idle customer's last window in
place: an as-of lookup three weeks later still returns last week's 7-day count. Here a row is
emitted wherever a window's value changes: the day after each active day (events enter) and
`w` days after that (they leave every `w`-day window), plus at anchor times (e.g. a signup,
so an entity with no events yet reads 0, not null). Change points may lie after the data's end:
they are known now and take effect then, so a later incremental materialization picks them up.

Windows are whole UTC days: as of time t, `<name>_<w>d` aggregates the events of the `w` days
before t's day (events on t's own day are not counted: they may lie after t).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

DAY_NS = 86_400 * 10**9
_SPAN = 1 << 22  # days per entity slot in the position key (+-5,700 years around 1970)


def _days(ts: pd.Series) -> np.ndarray:
    return ts.to_numpy("datetime64[ns]").astype("datetime64[D]").astype("int64")


def trailing_windows(
    events: pd.DataFrame,
    key: str,
    time: str,
    sums: Mapping[str, str | None],
    days: Sequence[int],
    anchors: pd.DataFrame | None = None,
    anchor_time: str | None = None,
    stamp: str = "event_timestamp",
) -> pd.DataFrame:
    """Rows `key, stamp, <name>_<w>d` for every `name: column` of `sums` (a count where the
    column is None) and every window `w` in `days`, one row wherever a value changes.

    `anchors` (with `key` and `anchor_time`) adds a row at each anchor time. Rows equal to the
    previous row of the same key are dropped. Counts are int64, sums float64 (a missing value
    adds 0).
    """
    ev_keys = events[key].to_numpy("int64")
    daily = pd.DataFrame({key: ev_keys, "_day": _days(events[time])})
    for name, column in sums.items():
        daily[name] = 1 if column is None else np.nan_to_num(events[column].to_numpy("float64"))
    daily = daily.groupby([key, "_day"], sort=True).sum().reset_index()

    active_keys, active_days = daily[key].to_numpy(), daily["_day"].to_numpy()
    at_keys = [active_keys] * (1 + len(days))
    at_ns = [(active_days + 1 + offset) * DAY_NS for offset in (0, *days)]
    if anchors is not None and anchor_time is not None and len(anchors):
        at_keys.append(anchors[key].to_numpy("int64"))
        at_ns.append(anchors[anchor_time].to_numpy("datetime64[ns]").astype("int64"))
    row_keys, row_ns = np.concatenate(at_keys), np.concatenate(at_ns)
    order = np.lexsort((row_ns, row_keys))
    row_keys, row_ns = row_keys[order], row_ns[order]
    first = np.ones(len(row_keys), dtype=bool)  # the first of each (key, time)
    first[1:] = (row_keys[1:] != row_keys[:-1]) | (row_ns[1:] != row_ns[:-1])
    row_keys, row_ns = row_keys[first], row_ns[first]

    # Events of a key, by day, as positions in one sorted array: a window's sum is the
    # difference of two cumulative sums found by binary search.
    _, index = np.unique(np.concatenate([active_keys, row_keys]), return_inverse=True)
    slot_events, slot_rows = index[: len(active_keys)], index[len(active_keys) :]
    positions = slot_events * _SPAN + active_days + _SPAN // 2
    until = slot_rows * _SPAN + np.floor_divide(row_ns, DAY_NS) + _SPAN // 2
    high = np.searchsorted(positions, until, side="left")  # events on days before the row's
    lows = {w: np.searchsorted(positions, until - w, side="left") for w in days}
    columns: dict[str, np.ndarray] = {}
    for name, column in sums.items():
        csum = np.concatenate([[0.0], np.cumsum(daily[name].to_numpy("float64"))])
        for w in days:
            values = csum[high] - csum[lows[w]]
            columns[f"{name}_{w}d"] = values.round().astype("int64") if column is None else values
    # a row equal to the previous one of its key changes nothing
    keep = np.ones(len(row_keys), dtype=bool)
    same = row_keys[1:] == row_keys[:-1]
    for values in columns.values():
        same &= values[1:] == values[:-1]
    keep[1:] = ~same
    return pd.DataFrame(
        {
            key: row_keys[keep],
            stamp: pd.to_datetime(row_ns[keep], utc=True),
            **{name: values[keep] for name, values in columns.items()},
        }
    )
