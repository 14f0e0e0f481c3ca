"""Row- and table-level validation of one raw partition with pandera.

Row-level failures are split off into a quarantine frame with the rule each row broke;
table-level failures (missing column, wrong dtype, a table-level check) raise DataValidationError.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from tasks.specs.dataset_spec import CheckSpec, ColumnSpec, TableSpec, column_dtype

REASON = "_reject_reason"
SOURCE = "_source_file"


class DataValidationError(ValueError):
    """Input that fails a table-level rule; the message names file, column and rule."""


@dataclass
class PartitionResult:
    clean: pd.DataFrame
    quarantine: pd.DataFrame
    rows_in: int
    rejected: dict[str, int] = field(default_factory=dict)
    nulls: dict[str, int] = field(default_factory=dict)


def build_schema(table: TableSpec, now: pd.Timestamp) -> pa.DataFrameSchema:
    """The pandera schema for a table: dtypes coerced, nullability, declared checks."""
    return pa.DataFrameSchema(
        {name: _column(col, now) for name, col in table.columns.items()},
        coerce=True,
        strict=False,
    )


FINITE = "finite"


def _column(col: ColumnSpec, now: pd.Timestamp) -> pa.Column:
    checks = [c.to_pandera(now) for c in col.checks]
    if col.dtype == "float64" and not col.allow_inf:  # ge(0) and friends accept +inf
        checks.append(pa.Check(lambda s: ~np.isinf(s), name=FINITE, ignore_na=True))
    return pa.Column(column_dtype(col), checks=checks, nullable=col.nullable)


def validate_partition(
    frame: pd.DataFrame,
    table: TableSpec,
    schema: pa.DataFrameSchema,
    source: str,
    duplicate_keys: pd.DataFrame | None = None,
) -> PartitionResult:
    """Validate one partition read from `source`; returns clean rows, quarantined rows, counts."""
    if not frame.index.equals(pd.RangeIndex(len(frame))):
        frame = frame.reset_index(drop=True)
    frame = normalise_timestamps(frame, table, source)
    reasons = pd.Series(pd.NA, index=frame.index, dtype="object")
    if duplicate_keys is not None and len(duplicate_keys):
        dup = _isin(frame, duplicate_keys, table.primary_key)
        reasons[dup] = f"{'+'.join(table.primary_key)}: duplicate_key"
    cases = None
    try:
        clean = schema.validate(frame, lazy=True)
    except SchemaErrors as exc:
        cases, clean = exc.failure_cases, None
    if cases is not None:  # handled outside `except` so errors do not chain pandera's
        _raise_table_failures(cases, table, source)
        _mark_row_failures(cases, table, reasons)
    bad = reasons.notna().to_numpy()
    if clean is None:  # every rule already ran on every row: coercing the rest is enough
        clean = schema.coerce_dtype(frame[~bad].copy())
    elif bad.any():
        clean = clean[~bad]
    clean = clean[list(table.columns)].reset_index(drop=True)
    quarantine = frame[bad].astype("string").assign(**{REASON: reasons[bad], SOURCE: source})
    return PartitionResult(
        clean=clean,
        quarantine=quarantine.reset_index(drop=True),
        rows_in=len(frame),
        rejected=reasons[bad].value_counts().to_dict(),
        nulls={c: int(n) for c, n in clean.isna().sum().items()},
    )


def _isin(frame: pd.DataFrame, keys: pd.DataFrame, columns: list[str]) -> np.ndarray:
    if len(columns) == 1:
        return frame[columns[0]].isin(keys[columns[0]]).to_numpy()
    return pd.MultiIndex.from_frame(frame[columns]).isin(pd.MultiIndex.from_frame(keys[columns]))


def normalise_timestamps(frame: pd.DataFrame, table: TableSpec, source: str) -> pd.DataFrame:
    """Parse datetime columns to UTC: mixed offsets are converted, naive values taken as UTC.

    A value that is present but cannot be parsed is a wrong dtype, which fails the table.
    """
    out = frame
    for name, col in table.columns.items():
        if col.dtype != "datetime" or name not in frame.columns:
            continue
        values = frame[name]
        if isinstance(values.dtype, pd.DatetimeTZDtype):
            parsed = values.dt.tz_convert("UTC")
        elif pd.api.types.is_datetime64_dtype(values):
            parsed = values.dt.tz_localize("UTC")
        else:
            parsed = pd.to_datetime(values, utc=True, errors="coerce", format="mixed")
            bad = parsed.isna() & values.notna()
            if bad.any():
                sample = ", ".join(repr(v) for v in values[bad].unique()[:3])
                raise DataValidationError(
                    f"{source}: column '{name}': rule dtype: expected datetime, found {sample}"
                )
        if out is frame:
            out = frame.copy()
        out[name] = parsed
    return out


def _check_level(table: TableSpec, column: str | None, check_number: float) -> CheckSpec | None:
    """The spec's check behind a failure (None for the built-in ones, e.g. finite)."""
    if column is None or column not in table.columns or pd.isna(check_number):
        return None
    checks = table.columns[column].checks
    return checks[int(check_number)] if int(check_number) < len(checks) else None


def _raise_table_failures(cases: pd.DataFrame, table: TableSpec, source: str) -> None:
    problems: list[str] = []
    for (column, check), group in cases.groupby(["column", "check"], dropna=False, sort=False):
        column = None if pd.isna(column) else column
        values = group["failure_case"]
        if check == "column_in_dataframe":
            problems += [f"column '{v}': rule required_column: missing" for v in values]
        elif check.startswith(("coerce_dtype", "dtype(")) and values.notna().any():
            want = table.columns[column].dtype if column in table.columns else "?"
            sample = ", ".join(repr(v) for v in values.dropna().unique()[:3])
            problems.append(f"column '{column}': rule dtype: expected {want}, found {sample}")
        elif group["index"].isna().all() and check != "not_nullable":
            problems.append(f"column '{column}': rule {check}: {values.iloc[0]}")
        else:
            spec = _check_level(table, column, group["check_number"].iloc[0])
            if spec is not None and spec.level == "table":
                problems.append(
                    f"column '{column}': rule {spec.rule} (table-level): {len(group)} rows fail"
                )
    if problems:
        unique = list(dict.fromkeys(problems))
        raise DataValidationError(f"{source}: " + "; ".join(unique))


def _mark_row_failures(cases: pd.DataFrame, table: TableSpec, reasons: pd.Series) -> None:
    """Write each failing row's first broken rule into `reasons` (marked rows keep theirs)."""
    rows = cases[cases["index"].notna()]
    keys = ["column", "check", "check_number"]
    for (column, check, number), group in rows.groupby(keys, dropna=False, sort=False):
        if check == "not_nullable" or str(check).startswith(("coerce_dtype", "dtype(")):
            rule = "not_null"
        else:
            spec = _check_level(table, column, number)
            rule = spec.rule if spec is not None else str(check)
        idx = group["index"].astype("int64").to_numpy()
        idx = idx[reasons.iloc[idx].isna().to_numpy()]
        reasons.iloc[idx] = f"{column}: {rule}"
