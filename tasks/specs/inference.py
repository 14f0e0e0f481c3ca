"""`mlops datasets init`: a starter dataset spec inferred from a sample file.

Column dtypes, nullability and observed ranges come from pandera's schema inference; text
columns that parse as timestamps (mixed UTC offsets included) become datetimes, and text
columns with few distinct values get an `isin` check. Keys, label and feature tables are best
guesses marked for the user to edit.
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Any

import pandas as pd
import pandera.pandas as pa
import yaml

from tasks.data.ingest import DEFAULT_ACCESS, Format, SourceAccess, read_file

MAX_CATEGORIES = 20
RANGE_CHECKS = {"greater_than_or_equal_to": "min_value", "less_than_or_equal_to": "max_value"}


def _as_datetimes(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    for column in out.columns:
        values = out[column]
        if values.dtype == object and values.notna().any():
            parsed = pd.to_datetime(values, utc=True, errors="coerce", format="mixed")
            if parsed.notna().sum() == values.notna().sum():
                out[column] = parsed
        elif pd.api.types.is_datetime64_dtype(values):
            out[column] = values.dt.tz_localize("UTC")
    return out


def _dtype(series: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(series):
        return "bool"
    if pd.api.types.is_integer_dtype(series):
        return "int64"
    if pd.api.types.is_float_dtype(series):
        return "float64"
    if pd.api.types.is_datetime64_any_dtype(series):
        return "datetime"
    return "string"


def infer_table(frame: pd.DataFrame, path: str) -> dict[str, Any]:
    """The `tables.<name>` entry for a sample of one table."""
    frame = _as_datetimes(frame)
    inferred = pa.infer_schema(frame)
    assert isinstance(inferred, pa.DataFrameSchema)
    columns: dict[str, Any] = {}
    for name, column in inferred.columns.items():
        series = frame[name]
        spec: dict[str, Any] = {"dtype": _dtype(series)}
        if column.nullable:
            spec["nullable"] = True
            spec["max_null_rate"] = round(min(1.0, 2 * float(series.isna().mean()) + 0.01), 3)
        checks: list[dict[str, Any]] = []
        if spec["dtype"] == "datetime":
            checks.append({"check": "not_in_future"})
        elif spec["dtype"] in ("int64", "float64") and not str(name).endswith("id"):
            bounds = {
                RANGE_CHECKS[c.name]: float(c.statistics[RANGE_CHECKS[c.name]])
                for c in column.checks
                if c.name in RANGE_CHECKS
            }
            if len(bounds) == 2:
                checks.append({"check": "in_range", "args": bounds})
        elif spec["dtype"] == "string" and 0 < series.nunique() <= MAX_CATEGORIES:
            allowed = sorted(str(v) for v in series.dropna().unique())
            checks.append({"check": "isin", "args": {"allowed_values": allowed}})
        if checks:
            spec["checks"] = checks
        columns[str(name)] = spec
    timestamps = [c for c, s in columns.items() if s["dtype"] == "datetime"]
    ids = [c for c in columns if c.endswith("id")] or [next(iter(columns))]
    return {
        "path": path,
        "primary_key": ids[:1],
        "timestamp": timestamps[0] if timestamps else "EDIT: a datetime column",
        "columns": columns,
    }


def starter_spec(name: str, sample: str, access: SourceAccess = DEFAULT_ACCESS) -> dict[str, Any]:
    """A whole spec around one sample table (a path or fsspec URI, opened with `access`);
    the parts that need a person say EDIT."""
    fmt: Format = "csv" if sample.endswith(".csv") else "parquet"
    table_dir = posixpath.dirname(sample)  # <source root>/<table>/<file>; keeps s3:// intact
    table = posixpath.basename(table_dir)
    entry = infer_table(read_file(sample, fmt, access=access), table)
    key = entry["primary_key"][0]
    binary = [
        c
        for c, s in entry["columns"].items()
        if s["dtype"] in ("int64", "bool")
        and s.get("checks", [{}])[0].get("args") == {"min_value": 0.0, "max_value": 1.0}
    ]
    return {
        "name": name,
        "description": "EDIT: what one row is and what the label means.",
        "entities": {key.removesuffix("_id") or key: {"join_keys": [key]}},
        "source": {"uri": posixpath.dirname(table_dir), "format": fmt},
        "label": {"table": table, "column": binary[-1] if binary else "EDIT", "positive": 1},
        "tables": {table: entry},
        "feature_tables": {
            f"{table}_features": {
                "transform": f"features.{name}.transforms:{table}_features",
                "entity": key.removesuffix("_id") or key,
                "inputs": [table],
                "ttl_days": 30,
                "description": "EDIT: write the transform in features/<name>/transforms.py.",
            }
        },
        "feature_services": {f"{name}_v1": [f"{table}_features"]},
        # filled in once the transform exists: they name its output features
        "validation": {"segments": {}, "monotonic": {}, "invariance": []},
        "monitoring": {"drift_features": []},
    }


def write_starter_spec(
    name: str, sample: str, out: Path, access: SourceAccess = DEFAULT_ACCESS
) -> Path:
    if out.exists():
        raise FileExistsError(f"{out} exists; not overwriting a spec")
    out.parent.mkdir(parents=True, exist_ok=True)
    spec = starter_spec(name, sample, access)
    text = yaml.safe_dump(spec, sort_keys=False, allow_unicode=True)
    out.write_text(f"# Starter spec inferred from {sample}; edit the EDIT fields.\n{text}")
    return out
