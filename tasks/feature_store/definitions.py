"""Feast definitions built from a dataset spec: one entity per spec entity, one feature view per
feature table (its source: data_prep's output), one feature service per model."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pandas as pd
from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Bool, Float64, Int64, PrimitiveFeastType, String, UnixTimestamp

from tasks.specs.dataset_spec import DatasetSpec, transform_output


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


def feast_objects(spec: DatasetSpec, features_uri: str) -> list[Any]:
    """Entity, one FeatureView per feature table (source: the data_prep output) and services."""
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
            tags={"dataset": spec.name},
        )
    services = [
        FeatureService(name=name, features=[views[t] for t in tables], tags={"dataset": spec.name})
        for name, tables in spec.feature_services.items()
    ]
    return [*entities.values(), *views.values(), *services]
