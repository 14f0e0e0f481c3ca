"""Feast definitions built from a dataset spec: one entity per spec entity, one feature view per
feature table (its source: data_prep's output), a request source and one on-demand feature view
per on-demand spec, one feature service per model.

Every view carries a `definition` tag: a digest of its spec entry and of its transform's
module source, so the feature-set fingerprint changes when what a feature means changes.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from datetime import timedelta
from typing import Any

import pandas as pd
from feast import (
    Entity,
    FeatureService,
    FeatureView,
    Field,
    FileSource,
    OnDemandFeatureView,
    RequestSource,
    ValueType,
)
from feast.types import Bool, Float64, Int64, PrimitiveFeastType, String, UnixTimestamp

from tasks.specs.dataset_spec import DatasetSpec, import_object, transform_output


class FeatureStoreError(ValueError):
    """A feature-store request that cannot be served; the message names what is wrong."""


FEAST_TYPES: dict[str, PrimitiveFeastType] = {
    "int64": Int64,
    "Int64": Int64,
    "float64": Float64,
    "bool": Bool,
    "boolean": Bool,
    "string": String,
    "object": String,
}
SPEC_TYPES: dict[str, Any] = {
    "int64": Int64,
    "float64": Float64,
    "bool": Bool,
    "string": String,
    "datetime": UnixTimestamp,
}


def view_name(spec: DatasetSpec, table: str) -> str:
    return f"{spec.name}__{table}"


def feature_schema(spec: DatasetSpec, table: str) -> list[Field]:
    """The Feast fields of a feature table's feature columns (its transform's output schema)."""
    ft = spec.feature_tables[table]
    meta = transform_output(spec, table)
    skip = {*spec.join_keys(ft.entity), spec.timestamp_field}
    fields = []
    for column, dtype in meta.dtypes.items():
        if column in skip:
            continue
        name = "string" if isinstance(dtype, pd.StringDtype) else str(dtype)
        if name.startswith("datetime64"):
            fields.append(Field(name=str(column), dtype=UnixTimestamp))
        elif name in FEAST_TYPES:
            fields.append(Field(name=str(column), dtype=FEAST_TYPES[name]))
        else:
            raise FeatureStoreError(f"feature_tables.{table}: column '{column}' has dtype {name}")
    return fields


def _code_sources(fn: Any, project: tuple[str, ...]) -> list[str]:
    """The source of `fn` and of the project's functions, classes and constants it refers to,
    transitively (library code is covered by the package versions a version records)."""
    parts: list[str] = []
    seen: set[int] = set()

    def names(code: Any) -> set[str]:
        found = set(code.co_names)
        for const in code.co_consts:
            if inspect.iscode(const):
                found |= names(const)
        return found

    def visit(obj: Any) -> None:
        if id(obj) in seen or not str(getattr(obj, "__module__", "")).startswith(project):
            return
        seen.add(id(obj))
        parts.append(inspect.getsource(obj))
        if inspect.isfunction(obj):
            for name in sorted(names(obj.__code__)):
                value = obj.__globals__.get(name)
                if inspect.isfunction(value) or inspect.isclass(value):
                    visit(value)
                elif isinstance(value, str | int | float | tuple | list | dict | frozenset):
                    parts.append(f"{name} = {value!r}")

    visit(fn)
    return parts


def definition_digest(entries: dict[str, Any], transform: str) -> str:
    """sha256 of spec entries (pydantic models) and of the transform's code: its source and
    that of the project code it calls, so a one-line change changes the digest."""
    spec = {k: v.model_dump(mode="json") for k, v in entries.items()}
    fn = import_object(transform)
    project = (transform.split(".", 1)[0], "tasks", "deployments")
    text = json.dumps(spec, sort_keys=True) + "\n".join(_code_sources(fn, project))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def request_source_name(spec: DatasetSpec) -> str:
    return f"{spec.name}__request"


def feast_objects(spec: DatasetSpec, features_uri: str) -> list[Any]:
    """Entity, one FeatureView per feature table (source: the data_prep output), the request
    source and on-demand views, and the services."""
    label_table = spec.tables[spec.label.table]
    entities = {}
    for name, entity in spec.entities.items():
        key_types = {label_table.columns[k].dtype for k in entity.join_keys}
        value_type = ValueType.INT64 if key_types == {"int64"} else ValueType.STRING
        entities[name] = Entity(name=name, join_keys=list(entity.join_keys), value_type=value_type)
    views: dict[str, FeatureView] = {}
    for table, ft in spec.feature_tables.items():
        source = FileSource(
            name=f"{view_name(spec, table)}__source",
            path=f"{features_uri.rstrip('/')}/{table}",
            timestamp_field=spec.timestamp_field,
        )
        views[table] = FeatureView(
            name=view_name(spec, table),
            entities=[entities[ft.entity]],
            ttl=timedelta(days=ft.ttl_days),
            schema=feature_schema(spec, table),
            source=source,
            online=True,
            description=ft.description,
            tags={
                "dataset": spec.name,
                "definition": definition_digest({"table": ft}, ft.transform),
            },
        )
    odfvs: dict[str, OnDemandFeatureView] = {}
    sources: list[Any] = []
    if spec.request is not None:
        request = RequestSource(
            name=request_source_name(spec),
            schema=[Field(name=f, dtype=SPEC_TYPES[d]) for f, d in spec.request.fields.items()],
        )
        sources.append(request)
        for name, od in spec.on_demand.items():
            udf = import_object(od.transform)
            odfvs[name] = OnDemandFeatureView(
                name=view_name(spec, name),
                sources=[request, *(views[t] for t in od.inputs)],
                schema=[Field(name=f, dtype=SPEC_TYPES[d]) for f, d in od.outputs.items()],
                udf=udf,
                udf_string=inspect.getsource(udf),
                mode="python",
                description=od.description,
                tags={
                    "dataset": spec.name,
                    "definition": definition_digest(
                        {"on_demand": od, "request": spec.request}, od.transform
                    ),
                },
            )
    members: dict[str, Any] = {**views, **odfvs}
    services = [
        FeatureService(
            name=name, features=[members[t] for t in tables], tags={"dataset": spec.name}
        )
        for name, tables in spec.feature_services.items()
    ]
    return [*entities.values(), *views.values(), *sources, *odfvs.values(), *services]
