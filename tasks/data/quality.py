"""Data-quality guards between building a run's tables and publishing them.

A batch must not be broken in itself (too many rows rejected, an empty table replacing a full
one, infinite feature values) and must not differ wildly from the last good batch: row counts,
null rates, ranges and means, category sets (as TFX's ExampleValidator or a Great Expectations
suite compares a batch with its reference). Each run's summary is kept with its snapshot
(`summary.json`) and is the next run's reference. The policy says which checks fail a run and
which only warn.
"""

from __future__ import annotations

import json
import math
from typing import Any, Literal

import fsspec
from pydantic import BaseModel, Field

from tasks.config import Strict
from tasks.data.preprocess import PrepReport
from tasks.data.raw_checks import DataValidationError
from tasks.specs.dataset_spec import DatasetSpec

SUMMARY = "summary.json"
Action = Literal["fail", "warn", "off"]


class DataRejectedError(DataValidationError):
    """A built batch the guards refuse; nothing of it was published."""


class Limit(Strict):
    limit: float = Field(ge=0.0)
    action: Action


class QualityPolicy(Strict):
    """What a run is compared with the last published one on, and what a breach does."""

    row_count_drop: Limit = Field(
        default=Limit(limit=0.5, action="fail"), description="Share of a table's rows lost."
    )
    null_rate_rise: Limit = Field(
        default=Limit(limit=0.2, action="fail"), description="Rise of a feature's null rate."
    )
    mean_shift: Limit = Field(
        default=Limit(limit=3.0, action="warn"),
        description="Move of a feature's mean, in the reference's standard deviations.",
    )
    range_shift: Limit = Field(
        default=Limit(limit=3.0, action="warn"),
        description="Min or max beyond the reference's by this many of its standard deviations.",
    )
    new_categories: Action = "warn"
    vanished_categories: Action = "warn"


class QualityCheck(BaseModel):
    check: str  # reject_rate, empty_table, non_finite, row_count, null_rate, mean, range, ...
    table: str
    feature: str = ""
    value: float | None = None
    threshold: float | None = None
    action: Action = "fail"
    passed: bool
    detail: str

    @property
    def failing(self) -> bool:
        return not self.passed and self.action == "fail"


def summarize(report: PrepReport) -> dict[str, Any]:
    """Per output table: rows, and per feature null rate, mean, std, min, max, infinities and
    (for codes, text and flags) the set of values. JSON-able: it is kept with the snapshot."""
    out: dict[str, Any] = {}
    for table, stats in report.features.items():
        features: dict[str, dict[str, Any]] = {
            str(row["feature"]): {
                k: _plain(row[k]) for k in ("null_rate", "mean", "std", "min", "max", "infinite")
            }
            for row in stats.to_dict("records")
        }
        for column, values in report.categories.get(table, {}).items():
            features.setdefault(column, {})["categories"] = values
        rows = int(stats["rows"].iloc[0]) if len(stats) else 0
        out[table] = {"rows": rows, "features": features}
    return out


def _plain(value: Any) -> float | None:
    number = float(value)
    return None if math.isnan(number) else number


def reject_rates(
    spec: DatasetSpec, report: PrepReport, limit_override: float | None = None
) -> list[QualityCheck]:
    """Each raw table's share of quarantined rows against its `max_reject_rate` (or the run's
    `limit_override`)."""
    out = []
    for name, table in report.tables.items():
        rejected = sum(table.rejected.values())
        rate = rejected / table.rows_in if table.rows_in else 0.0
        limit = spec.reject_rate_limit(name) if limit_override is None else limit_override
        top = sorted(table.rejected.items(), key=lambda kv: -kv[1])[:3]
        reasons = ", ".join(f"{reason}: {n:,}" for reason, n in top) or "none"
        out.append(
            QualityCheck(
                check="reject_rate",
                table=name,
                value=rate,
                threshold=limit,
                passed=rate <= limit,
                detail=f"{rate:.1%} of {table.rows_in:,} rows rejected (max_reject_rate "
                f"{limit:.1%}); top reasons: {reasons}",
            )
        )
    return out


def non_finite(spec: DatasetSpec, summary: dict[str, Any]) -> list[QualityCheck]:
    """Infinite values a transform produced (a division by zero): fail, or written as null."""
    out = []
    for table, ft in spec.feature_tables.items():
        for feature, stats in summary[table]["features"].items():
            count = int(stats.get("infinite") or 0)
            if not count:
                continue
            out.append(
                QualityCheck(
                    check="non_finite",
                    table=table,
                    feature=feature,
                    value=count,
                    action="fail" if ft.non_finite == "fail" else "warn",
                    passed=False,
                    detail=f"{count:,} infinite value(s) from the transform"
                    + (
                        f" (set feature_tables.{table}.non_finite: null to write them as missing)"
                        if ft.non_finite == "fail"
                        else ", written as missing (non_finite: null)"
                    ),
                )
            )
    return out


def compare(
    previous: dict[str, Any] | None,
    current: dict[str, Any],
    policy: QualityPolicy,
    allow_empty: bool = False,
    identifiers: frozenset[str] = frozenset(),
) -> list[QualityCheck]:
    """The run against the last published one; the first run passes and says so. Columns in
    `identifiers` (join keys, timestamps: new ones are expected) get no feature checks."""
    if previous is None:
        return [
            QualityCheck(
                check="previous_run",
                table="*",
                action="warn",
                passed=True,
                detail="first run: no published snapshot (with a summary) to compare against",
            )
        ]
    out = []
    for table, now in current.items():
        before = previous.get(table)
        if before is None:
            continue
        rows_then, rows_now = before["rows"], now["rows"]
        out.append(
            QualityCheck(
                check="empty_table",
                table=table,
                value=rows_now,
                passed=rows_now > 0 or rows_then == 0 or allow_empty,
                detail=f"{rows_now:,} rows, the published snapshot has {rows_then:,}"
                + (" (allow_empty)" if allow_empty and rows_now == 0 else ""),
            )
        )
        drop = 1 - rows_now / rows_then if rows_then else 0.0
        out.append(
            _limit(
                "row_count",
                table,
                "",
                drop,
                policy.row_count_drop,
                f"{rows_then:,} -> {rows_now:,} rows ("
                + (f"{drop:.1%} fewer)" if drop >= 0 else f"{-drop:.1%} more)"),
            )
        )
        for feature, stats in now["features"].items():
            ref = before["features"].get(feature)
            if ref is not None and feature not in identifiers:
                out += _feature_checks(table, feature, ref, stats, policy)
    return out


def _limit(check: str, table: str, feature: str, value: float, limit: Limit, detail: str):
    return QualityCheck(
        check=check,
        table=table,
        feature=feature,
        value=value,
        threshold=limit.limit,
        action=limit.action,
        passed=limit.action == "off" or value <= limit.limit,
        detail=detail,
    )


def _feature_checks(
    table: str, feature: str, ref: dict[str, Any], now: dict[str, Any], policy: QualityPolicy
) -> list[QualityCheck]:
    out = []
    if ref.get("null_rate") is not None and now.get("null_rate") is not None:
        rise = now["null_rate"] - ref["null_rate"]
        out.append(
            _limit(
                "null_rate",
                table,
                feature,
                rise,
                policy.null_rate_rise,
                f"null rate {ref['null_rate']:.3f} -> {now['null_rate']:.3f}",
            )
        )
    std = ref.get("std") or 0.0
    if std > 0 and ref.get("mean") is not None and now.get("mean") is not None:
        shift = abs(now["mean"] - ref["mean"]) / std
        out.append(
            _limit(
                "mean",
                table,
                feature,
                shift,
                policy.mean_shift,
                f"mean {ref['mean']:.4g} -> {now['mean']:.4g}: {shift:.1f} reference std",
            )
        )
        if None not in (ref.get("min"), ref.get("max"), now.get("min"), now.get("max")):
            beyond = max(ref["min"] - now["min"], now["max"] - ref["max"], 0.0) / std
            out.append(
                _limit(
                    "range",
                    table,
                    feature,
                    beyond,
                    policy.range_shift,
                    f"range [{ref['min']:.4g}, {ref['max']:.4g}] -> "
                    f"[{now['min']:.4g}, {now['max']:.4g}]: {beyond:.1f} reference std beyond",
                )
            )
    then, cats = ref.get("categories"), now.get("categories")
    if then is not None and cats is not None:
        for check, values, action in (
            (
                "new_categories",
                sorted(set(map(str, cats)) - set(map(str, then))),
                policy.new_categories,
            ),
            (
                "vanished_categories",
                sorted(set(map(str, then)) - set(map(str, cats))),
                policy.vanished_categories,
            ),
        ):
            out.append(
                QualityCheck(
                    check=check,
                    table=table,
                    feature=feature,
                    value=len(values),
                    action=action,
                    passed=action == "off" or not values,
                    detail=f"{check.replace('_', ' ')}: {values[:10]}" if values else "none",
                )
            )
    return out


def read_summary(snapshot_uri: str | None) -> dict[str, Any] | None:
    """The summary kept with a snapshot (None: no snapshot, or one from before summaries)."""
    if snapshot_uri is None:
        return None
    fs, path = fsspec.core.url_to_fs(f"{snapshot_uri.rstrip('/')}/{SUMMARY}")
    if not fs.exists(path):
        return None
    with fs.open(path, "r") as fh:
        return dict(json.load(fh))


def write_summary(staging: str, summary: dict[str, Any]) -> None:
    fs, path = fsspec.core.url_to_fs(f"{staging.rstrip('/')}/{SUMMARY}")
    with fs.open(path, "w") as fh:
        json.dump(summary, fh, indent=1, sort_keys=True)


def enforce(checks: list[QualityCheck]) -> None:
    """Raise DataRejectedError naming every failing check (table, feature, what was seen)."""
    failing = [c for c in checks if c.failing]
    if failing:
        lines = "; ".join(
            f"table '{c.table}'"
            + (f" feature '{c.feature}'" if c.feature else "")
            + f": {c.check}: {c.detail}"
            for c in failing
        )
        raise DataRejectedError(f"data rejected, nothing published: {lines}")


def check_rows(checks: list[QualityCheck]) -> list[dict[str, Any]]:
    """The checks as artifact rows: failing first, then warnings, then passes."""
    order = sorted(checks, key=lambda c: (not c.failing, c.passed, c.table, c.feature))
    return [
        {
            "result": "FAIL" if c.failing else ("warn" if not c.passed else "pass"),
            "check": c.check,
            "table": c.table,
            "feature": c.feature,
            "value": "" if c.value is None else f"{c.value:.4g}",
            "threshold": "" if c.threshold is None else f"{c.threshold:.4g}",
            "detail": c.detail,
        }
        for c in order
    ]


def quality_checks(
    spec: DatasetSpec,
    report: PrepReport,
    staging: str,
    previous_snapshot: str | None,
    policy: QualityPolicy,
    allow_empty: bool = False,
    max_reject_rate: float | None = None,
) -> list[QualityCheck]:
    """Every guard on a built run; its summary is written beside its staged tables, to be
    kept with the snapshot as the next run's reference."""
    summary = summarize(report)
    write_summary(staging, summary)
    return [
        *reject_rates(spec, report, max_reject_rate),
        *non_finite(spec, summary),
        *compare(
            read_summary(previous_snapshot),
            summary,
            policy,
            allow_empty,
            frozenset([*spec.join_keys(), spec.timestamp_field]),
        ),
    ]
