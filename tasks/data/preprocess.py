"""The Dask preprocessing pipeline: validate every raw partition, build feature tables, stage them.

Everything runs as one Dask graph, partition by partition, so the data never has to fit in
memory. Inputs of a `partition_by` transform that are already partitioned by that key (the
key ranges of the files do not overlap) skip the shuffle, and its other inputs are joined by
key range instead of being broadcast whole.
"""

from __future__ import annotations

import itertools
import operator
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import dask.dataframe as dd
import numpy as np
import pandas as pd
from dask.delayed import Delayed, delayed

from tasks.data import dask_progress
from tasks.data.ingest import DEFAULT_ACCESS, SourceAccess, join_uri, list_files, read_file
from tasks.data.publish import LABELS
from tasks.data.raw_checks import (
    DataValidationError,
    PartitionResult,
    build_schema,
    validate_partition,
)
from tasks.specs.dataset_spec import DatasetSpec, TableSpec, empty_frame, transform_output


@dataclass
class TableReport:
    files: int
    rows_in: int = 0
    rows_out: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    nulls: dict[str, int] = field(default_factory=dict)


@dataclass
class PrepReport:
    tables: dict[str, TableReport]
    features: dict[str, pd.DataFrame]  # per output table: merge_stats' per-feature summary
    copartitioned: dict[str, bool]
    categories: dict[str, dict[str, list[Any] | None]] = field(default_factory=dict)

    @property
    def rows_in(self) -> int:
        return sum(t.rows_in for t in self.tables.values())

    @property
    def rows_rejected(self) -> int:
        return sum(sum(t.rejected.values()) for t in self.tables.values())


Range = tuple[Any, Any] | None


@dataclass
class SourcePlan:
    """Files per table and what a key-only scan of them found.

    `key_ranges["table.column"]` holds each file's (min, max) of a `partition_by` column, or
    None where unknown; `copartitioned` says whether a transform's first input is already
    partitioned by its key (file ranges never overlap).
    """

    files: dict[str, list[str]]
    duplicate_keys: dict[str, pd.DataFrame]
    key_ranges: dict[str, list[Range]]
    copartitioned: dict[str, bool]


def plan_sources(
    spec: DatasetSpec, source_uri: str, access: SourceAccess = DEFAULT_ACCESS
) -> SourcePlan:
    """List each table's files and scan only their key columns for duplicates and partitioning.

    `access` (fsspec options and secret) reaches every listing and read, in the Dask tasks too.
    """
    fmt = spec.source.format
    files = {
        name: list_files(join_uri(source_uri, t.path), fmt, access)
        for name, t in spec.tables.items()
    }
    partition_cols = {
        (t, ft.partition_by)
        for ft in spec.feature_tables.values()
        if ft.partition_by
        for t in ft.inputs
    }
    scans: dict[str, list[Delayed]] = {}
    for name, table in spec.tables.items():
        ranged = sorted({col for t, col in partition_cols if t == name} | set(table.primary_key))
        scans[name] = [
            delayed(_scan_keys)(f, fmt, table.primary_key, ranged, access) for f in files[name]
        ]
    (computed,) = dask_progress.compute(scans, description=f"{spec.name}: scanning keys")
    duplicates: dict[str, pd.DataFrame] = {}
    for name, table in spec.tables.items():
        per_file = computed[name]
        if _disjoint([s["ranges"] for s in per_file], table.primary_key):
            dups = pd.concat([s["duplicates"] for s in per_file], ignore_index=True)
        else:
            dups = _global_duplicates(files[name], fmt, table.primary_key, access)
        duplicates[name] = dups
    key_ranges = {
        f"{t}.{col}": [s["ranges"][col] for s in computed[t]] for t, col in partition_cols
    }
    copartitioned = {
        f"{ft.inputs[0]}.{ft.partition_by}": _disjoint(
            [s["ranges"] for s in computed[ft.inputs[0]]], [ft.partition_by]
        )
        for ft in spec.feature_tables.values()
        if ft.partition_by
    }
    return SourcePlan(files, duplicates, key_ranges, copartitioned)


def _scan_keys(
    uri: str, fmt: str, key: list[str], ranged: list[str], access: SourceAccess
) -> dict[str, Any]:
    columns = sorted(set(key) | set(ranged))
    frame = read_file(uri, fmt, columns, access)  # type: ignore[arg-type]
    missing = [c for c in ranged if c not in frame.columns]
    if missing:
        raise DataValidationError(f"{uri}: column '{missing[0]}': rule required_column: missing")
    ranges = {}
    for col in ranged:
        values = frame[col]
        numeric = pd.api.types.is_numeric_dtype(values) and not values.isna().any()
        ranges[col] = (values.min(), values.max()) if numeric and len(values) else None
    dup = frame.loc[frame.duplicated(key, keep=False), key].drop_duplicates()
    return {"ranges": ranges, "duplicates": dup.reset_index(drop=True)}


def _disjoint(ranges: list[dict[str, Any]], cols: Sequence[str]) -> bool:
    """Whether per-file value ranges of a single column never overlap (so keys are file-local)."""
    if len(cols) != 1:
        return len(ranges) <= 1
    spans = [r[cols[0]] for r in ranges]
    if any(s is None for s in spans):
        return len(spans) <= 1
    spans.sort()
    return all(prev[1] < nxt[0] for prev, nxt in itertools.pairwise(spans))


def _global_duplicates(
    files: list[str], fmt: str, key: list[str], access: SourceAccess
) -> pd.DataFrame:
    keys = dd.from_map(read_file, files, fmt=fmt, columns=key, access=access)
    sizes = keys.groupby(key).size().compute()
    return sizes[sizes > 1].reset_index()[key]


def build_features(
    spec: DatasetSpec,
    plan: SourcePlan,
    staging_uri: str,
    now: pd.Timestamp,
    access: SourceAccess = DEFAULT_ACCESS,
) -> PrepReport:
    """Validate, transform and write every table under `staging_uri` in one Dask computation.

    `access` opens the raw files (the plan's); the staging output uses its own URI's defaults.
    """
    clean: dict[str, dd.DataFrame] = {}
    results: dict[str, list[Delayed]] = {}
    writes: list[Delayed] = []
    for name, table in spec.tables.items():
        parts = [
            delayed(_validate_file)(
                f, spec.source.format, table, now, plan.duplicate_keys[name], access
            )
            for f in plan.files[name]
        ]
        results[name] = [delayed(_summary)(p) for p in parts]
        writes += [
            delayed(_write_part)(
                delayed(operator.attrgetter("quarantine"))(p),
                join_uri(staging_uri, "quarantine", name, f"part-{i:05d}.parquet"),
            )
            for i, p in enumerate(parts)
        ]
        clean[name] = dd.from_delayed(
            [delayed(operator.attrgetter("clean"))(p) for p in parts],
            meta=empty_frame(table),
            verify_meta=False,
        )
    outputs: dict[str, tuple[dd.DataFrame, list[str]]] = {}
    for name, ft in spec.feature_tables.items():
        frame = _transform(spec, name, clean, plan)
        written = frame
        if ft.non_finite == "null":  # the summary still counts them: it reads `frame`
            written = frame.map_partitions(_infinite_as_null, meta=frame._meta)
        writes.append(_write_table(written, join_uri(staging_uri, "features", name)))
        outputs[name] = (frame, _category_columns(frame._meta, ft.categorical))
    labels = _labels(spec, clean[spec.label.table])
    writes.append(_write_table(labels, join_uri(staging_uri, "features", LABELS)))
    outputs[LABELS] = (labels, _category_columns(labels._meta, [spec.label.column]))
    summaries = {
        n: delayed(merge_stats)(f.map_partitions(partition_stats, meta=_STATS_META))
        for n, (f, _) in outputs.items()
    }
    categories = {
        n: delayed(merge_categories)(
            [delayed(partition_categories)(p, cols) for p in f.to_delayed(optimize_graph=False)]
        )
        for n, (f, cols) in outputs.items()
    }
    # Everything goes in as Delayed: dask reorders outputs when Delayed and dataframe
    # collections are mixed in one compute call. Shared inputs still run once.
    computed_results, computed_summaries, computed_categories, _ = dask_progress.compute(
        results,
        summaries,
        categories,
        writes,
        description=f"{spec.name}: validating and building feature tables",
    )
    report = PrepReport(
        tables={
            name: _merge_table(parts, len(plan.files[name]))
            for name, parts in computed_results.items()
        },
        features=computed_summaries,
        copartitioned=plan.copartitioned,
        categories=computed_categories,
    )
    check_null_rates(spec, report)
    return report


def _validate_file(
    uri: str,
    fmt: str,
    table: TableSpec,
    now: pd.Timestamp,
    duplicates: pd.DataFrame,
    access: SourceAccess,
) -> PartitionResult:
    frame = read_file(uri, fmt, access=access)  # type: ignore[arg-type]
    return validate_partition(frame, table, build_schema(table, now), uri, duplicates)


def _summary(result: PartitionResult) -> dict[str, Any]:
    return {
        "rows_in": result.rows_in,
        "rows_out": len(result.clean),
        "rejected": result.rejected,
        "nulls": result.nulls,
    }


def _merge_table(parts: list[dict[str, Any]], files: int) -> TableReport:
    report = TableReport(files=files)
    for part in parts:
        report.rows_in += part["rows_in"]
        report.rows_out += part["rows_out"]
        for key, n in part["rejected"].items():
            report.rejected[key] = report.rejected.get(key, 0) + int(n)
        for key, n in part["nulls"].items():
            report.nulls[key] = report.nulls.get(key, 0) + int(n)
    return report


def check_null_rates(spec: DatasetSpec, report: PrepReport) -> None:
    """Table-level rule: a column's null rate over the whole table stays under its maximum."""
    for name, table in spec.tables.items():
        rows = report.tables[name].rows_out
        for col, col_spec in table.columns.items():
            if col_spec.max_null_rate is None or rows == 0:
                continue
            rate = report.tables[name].nulls.get(col, 0) / rows
            if rate > col_spec.max_null_rate:
                raise DataValidationError(
                    f"table '{name}' ({table.path}): column '{col}': rule "
                    f"max_null_rate({col_spec.max_null_rate}): null rate is {rate:.4f}"
                )


def _transform(
    spec: DatasetSpec, name: str, clean: dict[str, dd.DataFrame], plan: SourcePlan
) -> dd.DataFrame:
    """Apply a feature table's transform partition by partition.

    Without `partition_by` the other inputs are broadcast whole. With it, every row of a key
    value, in every input, reaches exactly one call: when the first input is already
    partitioned by the key, each partition gets the other inputs' rows in its share of the
    key space (a partition-aligned join, gaps between files' ranges included); otherwise every
    input is shuffled by the key into the same number of partitions.
    """
    ft = spec.feature_tables[name]
    fn: Callable[..., pd.DataFrame] = spec.transform_fn(name)
    meta = transform_output(spec, name)
    required = [*spec.join_keys(ft.entity), spec.timestamp_field]
    missing = [c for c in required if c not in meta.columns]
    if missing:
        raise ValueError(f"feature_tables.{name}.transform {ft.transform}: output lacks {missing}")
    main = clean[ft.inputs[0]]
    key = ft.partition_by
    if key is None:
        others = [clean[t].repartition(npartitions=1) for t in ft.inputs[1:]]
        return main.map_partitions(fn, *others, meta=meta, align_dataframes=False)
    ranges = {t: plan.key_ranges[f"{t}.{key}"] for t in ft.inputs}
    known = all(r is not None for t in ft.inputs for r in ranges[t])
    if not plan.copartitioned[f"{ft.inputs[0]}.{key}"] or not known:
        n = main.npartitions
        inputs = [clean[t].shuffle(on=key, npartitions=n) for t in ft.inputs]
        return inputs[0].map_partitions(fn, *inputs[1:], meta=meta, align_dataframes=False)

    covers = _covers(ranges[ft.inputs[0]])
    aligned: list[list[Any]] = []
    for table in ft.inputs[1:]:
        parts = clean[table].to_delayed(optimize_graph=False)
        aligned.append(
            [
                delayed(_in_cover)(
                    key,
                    cover,
                    empty_frame(spec.tables[table]),
                    *[p for p, r in zip(parts, ranges[table], strict=True) if _meets(r, cover)],
                )
                for cover in covers
            ]
        )
    outputs = [
        delayed(fn)(part, *(column[i] for column in aligned))
        for i, part in enumerate(main.to_delayed(optimize_graph=False))
    ]
    return dd.from_delayed(outputs, meta=meta, verify_meta=False)


Cover = tuple[Any, Any]  # (exclusive lower bound or None, inclusive upper bound or None)


def _covers(spans: list[Range]) -> list[Cover]:
    """Per partition, its share of the whole key space: from the previous partition's largest
    key (exclusive) to its own (inclusive), open-ended at both ends."""
    order = sorted(range(len(spans)), key=lambda i: spans[i][0])  # type: ignore[index]
    covers: list[Cover] = [(None, None)] * len(spans)
    for rank, i in enumerate(order):
        low = spans[order[rank - 1]][1] if rank else None  # type: ignore[index]
        high = spans[i][1] if rank < len(order) - 1 else None  # type: ignore[index]
        covers[i] = (low, high)
    return covers


def _meets(span: Range, cover: Cover) -> bool:
    low, high = cover
    assert span is not None
    return (high is None or span[0] <= high) and (low is None or span[1] > low)


def _in_cover(key: str, cover: Cover, empty: pd.DataFrame, *frames: pd.DataFrame) -> pd.DataFrame:
    """Rows of `frames` whose `key` lies in `cover` (`empty`, the schema, when none)."""
    if not frames:
        return empty
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    low, high = cover
    keep = pd.Series(True, index=frame.index)
    if low is not None:
        keep &= frame[key] > low
    if high is not None:
        keep &= frame[key] <= high
    return frame[keep].reset_index(drop=True)


def _labels(spec: DatasetSpec, frame: dd.DataFrame) -> dd.DataFrame:
    """The labelled event rows: join keys, time, label and the request fields they carry."""
    table = spec.tables[spec.label.table]
    request = [f for f in (spec.request.fields if spec.request else []) if f != spec.label.column]
    cols = list(dict.fromkeys([*spec.join_keys(), table.timestamp, spec.label.column, *request]))
    return frame[cols].rename(columns={table.timestamp: spec.timestamp_field})


def _write_table(frame: dd.DataFrame, uri: str) -> Delayed:
    return delayed(_done)(
        frame.to_parquet(
            uri,
            write_index=False,
            compute=False,
            write_metadata_file=False,
            name_function=lambda i: f"part-{i:05d}.parquet",
        )
    )


def _done(_: Any) -> None:
    return None


def _write_part(frame: pd.DataFrame, uri: str) -> int:
    if frame.empty:
        return 0
    import fsspec

    fs, path = fsspec.core.url_to_fs(uri)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path, "wb") as fh:
        frame.to_parquet(fh, index=False)
    return len(frame)


_STATS_COLUMNS = ["feature", "count", "nulls", "infinite", "sum", "sumsq", "min", "max"]
MAX_CATEGORIES = 1_000  # more distinct values: not a category set worth comparing
_STATS_META = pd.DataFrame(
    {
        "feature": pd.Series(dtype=object),
        **{c: pd.Series(dtype="float64") for c in _STATS_COLUMNS[1:]},
    }
)


def partition_stats(frame: pd.DataFrame) -> pd.DataFrame:
    """Sufficient statistics per column (numeric moments over finite values; counts of rows,
    nulls and infinities)."""
    numeric = frame.select_dtypes("number")
    values = numeric.to_numpy(dtype="float64", na_value=np.nan)
    infinite = np.isinf(values)
    values = np.where(infinite, np.nan, values)
    stats = pd.DataFrame(
        {
            "feature": frame.columns,
            "count": float(len(frame)),
            "nulls": frame.isna().sum().to_numpy(dtype="float64"),
        }
    ).set_index("feature")
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-null column: min/max NaN
        moments = pd.DataFrame(
            {
                "infinite": infinite.sum(axis=0).astype("float64"),
                "sum": np.nansum(values, axis=0),
                "sumsq": np.nansum(values**2, axis=0),
                "min": np.nanmin(values, axis=0) if len(values) else np.nan,
                "max": np.nanmax(values, axis=0) if len(values) else np.nan,
            },
            index=numeric.columns,
        )
    stats = stats.join(moments)
    stats["infinite"] = stats["infinite"].fillna(0.0)
    return stats.reset_index()[_STATS_COLUMNS]


def merge_stats(parts: pd.DataFrame) -> pd.DataFrame:
    """Per-feature rows, nulls, mean, std, min, max from the partitions' sufficient statistics."""
    g = parts.groupby("feature", sort=False)
    merged = g.agg(
        count=("count", "sum"),
        nulls=("nulls", "sum"),
        infinite=("infinite", "sum"),
        sum=("sum", lambda s: s.sum(min_count=1)),
        sumsq=("sumsq", lambda s: s.sum(min_count=1)),
        min=("min", "min"),
        max=("max", "max"),
    )
    n = merged["count"] - merged["nulls"] - merged["infinite"]
    mean = merged["sum"] / n.where(n > 0)
    var = (merged["sumsq"] / n.where(n > 0) - mean**2).clip(lower=0)
    out = pd.DataFrame(
        {
            "rows": merged["count"].astype("int64"),
            "null_rate": (merged["nulls"] / merged["count"].where(merged["count"] > 0)).round(4),
            "infinite": merged["infinite"].astype("int64"),
            "mean": mean,
            "std": np.sqrt(var),
            "min": merged["min"],
            "max": merged["max"],
        }
    )
    return out.reset_index()


def _infinite_as_null(frame: pd.DataFrame) -> pd.DataFrame:
    floats = frame.select_dtypes("float").columns
    if len(floats) == 0:
        return frame
    return frame.assign(**{c: frame[c].where(~np.isinf(frame[c])) for c in floats})


def _category_columns(meta: pd.DataFrame, declared: list[str]) -> list[str]:
    """Columns whose set of values is compared run to run: declared codes, text and flags."""
    kinds = meta.select_dtypes(include=["object", "string", "bool", "boolean"]).columns
    return list(dict.fromkeys([*(c for c in declared if c in meta.columns), *map(str, kinds)]))


def partition_categories(frame: pd.DataFrame, columns: list[str]) -> dict[str, list[Any]]:
    return {c: frame[c].dropna().unique().tolist()[: MAX_CATEGORIES + 1] for c in columns}


def merge_categories(parts: list[dict[str, list[Any]]]) -> dict[str, list[Any] | None]:
    """Each column's sorted distinct values (as JSON-able scalars); None past MAX_CATEGORIES."""
    merged: dict[str, set[Any]] = {}
    for part in parts:
        for column, values in part.items():
            merged.setdefault(column, set()).update(
                v.item() if isinstance(v, np.generic) else v for v in values
            )
    return {c: sorted(v, key=str) if len(v) <= MAX_CATEGORIES else None for c, v in merged.items()}
