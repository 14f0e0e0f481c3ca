"""The declarative dataset spec: everything dataset-specific lives here, not in flows or tasks."""

from __future__ import annotations

import importlib
import reprlib
from collections.abc import Callable, Mapping
from datetime import date
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pandera.pandas as pa
import yaml
from pydantic import Field, ValidationError, model_validator

from deployments.contract import CodeReferenceError, dataset_object
from tasks.config import Strict

Dtype = Literal["int64", "float64", "bool", "string", "datetime"]
CheckLevel = Literal["row", "table"]


PANDAS_DTYPES: dict[str, object] = {
    "int64": "int64",
    "float64": "float64",
    "bool": "bool",
    "string": pd.StringDtype("pyarrow"),  # a dtype check, not a per-value isinstance
    "datetime": pd.DatetimeTZDtype(tz="UTC"),
}
NULLABLE_DTYPES: dict[str, object] = {"int64": "Int64", "bool": "boolean"}
CHECK_ALIASES = frozenset({"eq", "ne", "gt", "ge", "lt", "le", "between"})  # pandera's short names
MAX_VALUES = 100_000  # a spec has hundreds; more is a YAML alias bomb or a cycle
MAX_DEPTH = 64


class SpecError(ValueError):
    """A dataset spec that cannot be used; the message names the file and field."""


class CheckSpec(Strict):
    """One pandera built-in check (e.g. `ge`, `in_range`, `isin`) or `not_in_future`."""

    check: str
    args: dict[str, Any] = Field(default_factory=dict)
    level: CheckLevel = "row"

    @model_validator(mode="after")
    def _builds(self) -> CheckSpec:
        try:
            self.to_pandera(pd.Timestamp.now(tz="UTC"))
        except Exception as exc:  # whatever the factory raises on its args (re.error, ...)
            args = reprlib.repr(self.args)
            raise ValueError(f"check '{self.check}' with args {args}: {exc}") from exc
        return self

    def to_pandera(self, now: pd.Timestamp) -> pa.Check:
        """The pandera check; `not_in_future` compares with `now`, the run's start."""
        if self.check == "not_in_future":
            return pa.Check.le(now)
        # only check factories: pa.Check's other classmethods (register_backend, ...) are not
        if self.check not in CHECK_ALIASES and not pa.Check.is_builtin_check(self.check):
            raise ValueError("unknown check (use a pandera built-in Check or not_in_future)")
        return getattr(pa.Check, self.check)(**self.args)

    @property
    def rule(self) -> str:
        args = ",".join(f"{k}={v}" for k, v in self.args.items())
        return f"{self.check}({args})" if args else self.check


class ColumnSpec(Strict):
    dtype: Dtype
    nullable: bool = False
    max_null_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    allow_inf: bool = Field(
        default=False, description="Accept +inf and -inf (float64): quarantined otherwise."
    )
    checks: list[CheckSpec] = Field(default_factory=list)


class TableSpec(Strict):
    """A raw input table: files under `path` (relative to the source URI) in the source format."""

    path: str
    primary_key: list[str] = Field(min_length=1)
    timestamp: str
    columns: dict[str, ColumnSpec] = Field(min_length=1)
    max_reject_rate: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Share of rows that may be quarantined before the run fails; default: the "
        "dataset's.",
    )

    @model_validator(mode="after")
    def _keys_are_columns(self) -> TableSpec:
        for name in [*self.primary_key, self.timestamp]:
            if name not in self.columns:
                raise ValueError(f"key or timestamp column '{name}' is not in columns")
        if self.columns[self.timestamp].dtype != "datetime":
            raise ValueError(f"timestamp column '{self.timestamp}' must have dtype datetime")
        return self


class FeatureTableSpec(Strict):
    """A feature table: `transform(first_input_partition, *other_inputs_whole) -> frame`.

    With `partition_by`, all rows of one key value must reach the transform together; the
    pipeline checks whether the input is already partitioned that way and shuffles otherwise.
    """

    transform: str = Field(pattern=r"^[\w.]+:\w+$")
    entity: str = Field(description="The entity whose join keys key this table.")
    inputs: list[str] = Field(min_length=1)
    partition_by: str | None = None
    ttl_days: int = Field(default=365, ge=1, le=3650, description="How long a row stays valid.")
    categorical: list[str] = Field(
        default_factory=list, description="Output features that are integer category codes."
    )
    non_finite: Literal["fail", "null"] = Field(
        default="fail",
        description="A transform's +inf/-inf output (a division by zero): fail the run, or "
        "write it as missing.",
    )
    description: str = ""


class SourceSpec(Strict):
    uri: str
    format: Literal["parquet", "csv"] = "parquet"


class EntitySpec(Strict):
    join_keys: list[str] = Field(min_length=1)


class LabelSpec(Strict):
    table: str
    column: str
    positive: int | str | bool = 1
    horizon_days: int = Field(
        default=0,
        ge=0,
        le=3650,
        description="How long after its event the outcome is known (0: at once). Training "
        "leaves out rows whose window is still open and keeps this much time between splits.",
    )


class RequestSpec(Strict):
    """Values that arrive with a scoring request: columns of the label table (the event rows)."""

    fields: dict[str, Dtype] = Field(min_length=1)
    features: list[str] = Field(
        default_factory=list, description="Fields a model reads as they are."
    )

    @model_validator(mode="after")
    def _features_are_fields(self) -> RequestSpec:
        unknown = [f for f in self.features if f not in self.fields]
        if unknown:
            raise ValueError(f"request.features: {unknown} are not request fields")
        return self


class OnDemandSpec(Strict):
    """Features computed at request time from request fields and stored features:
    `transform(columns: dict[str, list]) -> dict[str, list]`, the same function in Feast (an
    on-demand feature view), in batch scoring and in the model server."""

    transform: str = Field(pattern=r"^[\w.]+:\w+$")
    inputs: list[str] = Field(
        default_factory=list, description="Feature tables whose stored features it reads."
    )
    outputs: dict[str, Dtype] = Field(min_length=1)
    categorical: list[str] = Field(default_factory=list)
    description: str = ""


class GenerateOptions(Strict):
    """What every dataset generator takes: size, seed, defects and drift."""

    rows: int = Field(
        default=100_000, ge=1_000, le=100_000_000, description="Rows of the main table."
    )
    seed: int = Field(default=0, ge=0)
    start: date = Field(default=date(2025, 1, 1), description="First day of the data.")
    end: date = Field(default=date(2026, 6, 30), description="Last day of the data.")
    chunk_rows: int = Field(default=1_000_000, ge=1_000, le=5_000_000, description="Rows per file.")
    dirty_rate: float = Field(default=0.0, ge=0.0, le=0.2, description="Share of defective rows.")
    drift_start: date | None = Field(default=None, description="Drift applies from this date on.")
    covariate_drift: tuple[str, ...] = Field(default=(), description="Columns to shift.")
    concept_drift: bool = Field(default=False, description="Change the label's relation too.")

    @model_validator(mode="after")
    def _drift_needs_a_date(self) -> GenerateOptions:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        if self.drift_start is None and (self.covariate_drift or self.concept_drift):
            raise ValueError("covariate_drift and concept_drift need a drift_start date")
        return self


class SegmentSpec(Strict):
    """A slice of the test set that validation scores on its own.

    A categorical feature (its integer codes, named by `labels`), or a numeric one cut at `bins`
    (left-closed edges; the last band is open-ended).
    """

    feature: str
    bins: list[float] | None = Field(default=None, min_length=1)
    labels: dict[int, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _bins_increase(self) -> SegmentSpec:
        if self.bins and any(b >= a for a, b in zip(self.bins[1:], self.bins, strict=False)):
            raise ValueError(f"bins of '{self.feature}' must increase")
        return self


class InvarianceSpec(Strict):
    """Features the label should not depend on: perturbing them must barely move predictions."""

    features: list[str] = Field(min_length=1)
    perturbation: Literal["shuffle", "noise"] = "shuffle"
    scale: float = Field(default=0.01, gt=0.0, description="Relative noise for `noise`.")


class ValidationSpec(Strict):
    """Dataset knowledge the validation flow checks a model against."""

    segments: dict[str, SegmentSpec] = Field(default_factory=dict)
    monotonic: dict[str, Literal["increasing", "decreasing"]] = Field(
        default_factory=dict, description="Feature -> the direction risk must move with it."
    )
    invariance: list[InvarianceSpec] = Field(default_factory=list)


class MonitoringSpec(Strict):
    drift_features: list[str] = Field(default_factory=list, description="Watched for drift.")


class DatasetSpec(Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str
    entities: dict[str, EntitySpec] = Field(min_length=1)
    source: SourceSpec
    max_reject_rate: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="Share of a table's rows that may be quarantined before the run fails.",
    )
    timestamp_field: str = "event_timestamp"
    label: LabelSpec
    tables: dict[str, TableSpec] = Field(min_length=1)
    feature_tables: dict[str, FeatureTableSpec] = Field(min_length=1)
    request: RequestSpec | None = None
    on_demand: dict[str, OnDemandSpec] = Field(default_factory=dict)
    feature_services: dict[str, list[str]] = Field(
        default_factory=dict,
        description="One per model: service name -> its feature tables and on-demand views.",
    )
    generator: str | None = Field(default=None, pattern=r"^[\w.]+:\w+$")
    validation: ValidationSpec = Field(default_factory=ValidationSpec)
    monitoring: MonitoringSpec = Field(default_factory=MonitoringSpec)

    @model_validator(mode="after")
    def _references_resolve(self) -> DatasetSpec:
        if self.label.table not in self.tables:
            raise ValueError(f"label.table '{self.label.table}' is not a table")
        label_table = self.tables[self.label.table]
        if self.label.column not in label_table.columns:
            raise ValueError(
                f"label.column '{self.label.column}' is not a column of table '{self.label.table}'"
            )
        for key in self.join_keys():
            if key not in label_table.columns:
                raise ValueError(f"entity join key '{key}' is not a column of the label table")
        for name, ft in self.feature_tables.items():
            if ft.entity not in self.entities:
                raise ValueError(f"feature_tables.{name}.entity: unknown entity '{ft.entity}'")
            for table in ft.inputs:
                if table not in self.tables:
                    raise ValueError(f"feature_tables.{name}.inputs: unknown table '{table}'")
            for table in ft.inputs if ft.partition_by else []:
                if ft.partition_by not in self.tables[table].columns:
                    raise ValueError(
                        f"feature_tables.{name}.partition_by: '{ft.partition_by}' is not a "
                        f"column of '{table}' (every input is partitioned by it)"
                    )
        if self.request is not None:
            missing = [f for f in self.request.fields if f not in label_table.columns]
            if missing:
                raise ValueError(
                    f"request.fields: {missing} are not columns of table '{self.label.table}'"
                )
        for name, od in self.on_demand.items():
            if name in self.feature_tables:
                raise ValueError(f"on_demand.{name}: the name of a feature table too")
            if self.request is None:
                raise ValueError(f"on_demand.{name}: on-demand features need `request` fields")
            unknown = [t for t in od.inputs if t not in self.feature_tables]
            if unknown:
                raise ValueError(f"on_demand.{name}.inputs: unknown feature tables {unknown}")
        for service, tables in self.feature_services.items():
            unknown = [t for t in tables if t not in {**self.feature_tables, **self.on_demand}]
            if unknown:
                raise ValueError(
                    f"feature_services.{service}: {unknown} are not in feature_tables or on_demand"
                )
        return self

    def join_keys(self, entity: str | None = None) -> list[str]:
        """One entity's join keys, or every entity's (in order, without repeats)."""
        if entity is not None:
            return list(self.entities[entity].join_keys)
        keys = [k for e in self.entities.values() for k in e.join_keys]
        return list(dict.fromkeys(keys))

    def service_tables(self, service: str) -> list[str]:
        """The feature tables a service reads: its own and its on-demand views' inputs."""
        entries = self.feature_services[service]
        tables = [
            t for e in entries for t in (self.on_demand[e].inputs if e in self.on_demand else [e])
        ]
        return list(dict.fromkeys(tables))

    def service_on_demand(self, service: str) -> list[str]:
        return [e for e in self.feature_services[service] if e in self.on_demand]

    def service_request_fields(self, service: str) -> list[str]:
        """The request fields a scoring row brings for this service (none without on-demand
        views or request features)."""
        if self.request is None or not self.service_on_demand(service):
            return []
        return list(self.request.fields)

    def service_keys(self, service: str) -> list[str]:
        """The join keys an entity row needs for a feature service."""
        entities = [self.feature_tables[t].entity for t in self.service_tables(service)]
        return list(dict.fromkeys(k for e in entities for k in self.entities[e].join_keys))

    def reject_rate_limit(self, table: str) -> float:
        limit = self.tables[table].max_reject_rate
        return self.max_reject_rate if limit is None else limit

    def transform_fn(self, feature_table: str) -> Callable[..., Any]:
        return import_object(self.feature_tables[feature_table].transform)


def monotone(spec: DatasetSpec) -> dict[str, int]:
    """The spec's monotonic directions as LightGBM-style constraints (+1 / -1)."""
    return {f: 1 if d == "increasing" else -1 for f, d in spec.validation.monotonic.items()}


def import_object(path: str, dataset: str | None = None) -> Any:
    """Import `package.module:name`. With `dataset`: only `features.<dataset>[.module]:name`,
    an object defined in that dataset's folder; anything else (another package or dataset, a
    file outside the folder, symlinks resolved) is refused with an ImportError (a
    CodeReferenceError) before it is imported. parse_spec checks every reference of a spec so;
    the pipeline then imports those of the checked spec."""
    if dataset is not None:
        return dataset_object(path, dataset)
    module_name, _, attr = path.partition(":")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        raise ImportError(f"module '{module_name}' has no attribute '{attr}'") from exc


def load_spec(path: Path) -> DatasetSpec:
    """Load and check a spec file; every error names the file and the field."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(f"{path}: cannot read dataset spec: {exc}") from exc
    return parse_spec(text, str(path))


def parse_spec(text: str, where: str, code: str | None = None) -> DatasetSpec:
    """Parse and check spec YAML from `where` (a file, a block); errors name it and the field.
    Its code references must name modules of `features/<code>/` (default: the spec's name)."""
    try:
        raw = yaml.safe_load(text)
    except RecursionError:
        raise SpecError(f"{where}: cannot read dataset spec: nested too deeply") from None
    except Exception as exc:  # YAMLError, and ValueError etc. from PyYAML (a date 2025-13-45)
        raise SpecError(f"{where}: cannot read dataset spec: {exc}") from exc
    _check_size(raw, where)
    try:
        spec = DatasetSpec.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()
        )
        raise SpecError(f"{where}: invalid dataset spec: {problems}") from exc
    for field, target in _code_references(spec):
        try:
            fn = import_object(target, code or spec.name)
        except CodeReferenceError as exc:
            raise SpecError(f"{where}: {field}: cannot import '{target}': {exc}") from exc
        if not callable(fn):
            raise SpecError(f"{where}: {field}: '{target}' is not callable")
    _check_transforms(spec, where)
    _check_feature_references(spec, where)
    _check_on_demand_outputs(spec, where)
    return spec


SAMPLE_VALUES: dict[str, Any] = {
    "int64": 1,
    "float64": 1.0,
    "bool": True,
    "string": "x",
    "datetime": pd.Timestamp("2026-01-01", tz="UTC"),
}


def on_demand_sample(spec: DatasetSpec, name: str) -> dict[str, list[Any]]:
    """One input row of an on-demand view: its request fields and its input tables' features."""
    assert spec.request is not None
    columns = {f: [SAMPLE_VALUES[d]] for f, d in spec.request.fields.items()}
    for table in spec.on_demand[name].inputs:
        for column, values in transform_output(spec, table).items():
            columns.setdefault(str(column), [1.0 if values.dtype.kind in "fiub" else None])
    return columns


def _check_size(raw: Any, where: str) -> None:
    """Refuse a document that expands to too many values or nests too deeply: YAML aliases
    can make a few lines stand for millions of values, or a cycle."""
    stack, count = [(raw, 0)], 0
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > MAX_VALUES or depth > MAX_DEPTH:
            raise SpecError(
                f"{where}: cannot read dataset spec: more than {MAX_VALUES} values or "
                f"{MAX_DEPTH} levels (repeated or recursive YAML aliases?)"
            )
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for kv in value.items() for v in kv)
        elif isinstance(value, list | set | tuple):  # tuples: `!!omap` and `!!pairs`
            stack.extend((v, depth + 1) for v in value)


def _check_transforms(spec: DatasetSpec, where: str) -> None:
    """Each feature table's transform runs on zero rows of its inputs and returns a frame."""
    for name, ft in spec.feature_tables.items():
        try:
            out = transform_output(spec, name)
        except Exception as exc:
            raise SpecError(
                f"{where}: feature_tables.{name}.transform failed on empty inputs "
                f"{ft.inputs}: {type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(out, pd.DataFrame):
            raise SpecError(
                f"{where}: feature_tables.{name}.transform returns a {type(out).__name__}, "
                "not a DataFrame"
            )


def _check_on_demand_outputs(spec: DatasetSpec, where: str) -> None:
    for name, od in spec.on_demand.items():
        try:
            produced = import_object(od.transform)(on_demand_sample(spec, name))  # checked
        except Exception as exc:
            raise SpecError(
                f"{where}: on_demand.{name}.transform failed on a sample row: {exc}"
            ) from exc
        if not isinstance(produced, Mapping):
            raise SpecError(
                f"{where}: on_demand.{name}.transform returns a {type(produced).__name__}, "
                "not a mapping of columns"
            )
        if set(produced) != set(od.outputs):
            raise SpecError(
                f"{where}: on_demand.{name}.transform returns {sorted(map(str, produced))}, "
                f"its outputs declare {sorted(od.outputs)}"
            )


def column_dtype(col: ColumnSpec) -> object:
    """The pandas dtype a validated column has (nullable ints and bools use pandas' NA types)."""
    if col.nullable and col.dtype in NULLABLE_DTYPES:
        return NULLABLE_DTYPES[col.dtype]
    return PANDAS_DTYPES[col.dtype]


def empty_frame(table: TableSpec) -> pd.DataFrame:
    """A zero-row frame with the validated dtypes of `table` (Dask's meta)."""
    return pd.DataFrame(
        {name: pd.Series(dtype=column_dtype(col)) for name, col in table.columns.items()}
    )


def transform_output(spec: DatasetSpec, table: str) -> pd.DataFrame:
    """A feature table's output schema: its transform run on empty inputs (zero rows)."""
    ft = spec.feature_tables[table]
    return spec.transform_fn(table)(*(empty_frame(spec.tables[t]) for t in ft.inputs))


def feature_columns(spec: DatasetSpec) -> dict[str, list[str]]:
    """Each feature table's feature columns (its output without join keys and timestamp), each
    on-demand view's outputs, and the request features (under `request`)."""
    out = {}
    for name, ft in spec.feature_tables.items():
        skip = {*spec.join_keys(ft.entity), spec.timestamp_field}
        out[name] = [str(c) for c in transform_output(spec, name).columns if c not in skip]
    for name, od in spec.on_demand.items():
        out[name] = list(od.outputs)
    if spec.request is not None:
        out["request"] = list(spec.request.features)
    return out


def _check_feature_references(spec: DatasetSpec, where: str) -> None:
    known = {c for columns in feature_columns(spec).values() for c in columns}
    v = spec.validation
    refs = [
        *((f"validation.segments.{n}.feature", s.feature) for n, s in v.segments.items()),
        *((f"validation.monotonic.{f}", f) for f in v.monotonic),
        *(
            (f"validation.invariance.{i}.features", f)
            for i, c in enumerate(v.invariance)
            for f in c.features
        ),
        *(("monitoring.drift_features", f) for f in spec.monitoring.drift_features),
    ]
    for field, feature in refs:
        if feature not in known:
            raise SpecError(
                f"{where}: {field}: '{feature}' is not a feature of feature_tables, "
                f"on_demand or request.features (known: {sorted(known)})"
            )


def _code_references(spec: DatasetSpec) -> list[tuple[str, str]]:
    refs = [
        (f"feature_tables.{n}.transform", ft.transform) for n, ft in spec.feature_tables.items()
    ]
    refs += [(f"on_demand.{n}.transform", od.transform) for n, od in spec.on_demand.items()]
    if spec.generator:
        refs.append(("generator", spec.generator))
    return refs
