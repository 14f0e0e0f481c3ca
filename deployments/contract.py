"""A version's serving contract (`serving.json`): what a scoring request must bring and how the
model's feature vector is assembled from it, as plain data written at registration.

    {"features": [...],                  the model's inputs, in order
     "nullable": [...],                  features that may be missing (NaN); none may be inf
     "join_keys": {"customer_id": "INT64"},
     "project": "mlops",                 the Feast project of the online store's tables
     "views": {"<view>": [...]},         stored features read from the online store, by view
     "request_fields": {"loan_amount": "float64", ...},
     "on_demand": [{"transform": "features.<dataset>.<module>:<fn>", "outputs": {...}}],
     "fingerprint": "<service>:<digest>"}

On-demand transforms are the functions Feast's on-demand views call in training: they take
columns (request fields and stored features) and return columns. Only modules of the
`features` package are imported, so a contract cannot make a server load arbitrary code.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

SERVING = "serving.json"
HOLDOUT = "holdout.parquet"  # held-out test rows and their offline scores: the smoke test
TRANSFORM_PACKAGE = "features"
FIELD_TYPES = {"float64": float, "int64": int, "string": str, "bool": bool}

Columns = dict[str, list[Any]]


class ContractError(ValueError):
    """A malformed serving contract; names the field."""


@dataclass(frozen=True)
class OnDemand:
    transform: str
    outputs: dict[str, str]


@dataclass(frozen=True)
class ServingContract:
    features: list[str]
    join_keys: dict[str, str]
    fingerprint: str
    project: str = "mlops"
    views: dict[str, list[str]] = field(default_factory=dict)
    request_fields: dict[str, str] = field(default_factory=dict)
    on_demand: list[OnDemand] = field(default_factory=list)
    nullable: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        data = {
            "features": self.features,
            "nullable": self.nullable,
            "join_keys": self.join_keys,
            "project": self.project,
            "views": self.views,
            "request_fields": self.request_fields,
            "on_demand": [{"transform": o.transform, "outputs": o.outputs} for o in self.on_demand],
            "fingerprint": self.fingerprint,
        }
        return json.dumps(data, indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> ServingContract:
        try:
            data = json.loads(text)
            contract = cls(
                features=[str(f) for f in data["features"]],
                join_keys={str(k): str(v) for k, v in data["join_keys"].items()},
                fingerprint=str(data["fingerprint"]),
                project=str(data.get("project", "mlops")),
                views={str(v): [str(f) for f in fs] for v, fs in data.get("views", {}).items()},
                request_fields={str(k): str(v) for k, v in data.get("request_fields", {}).items()},
                on_demand=[
                    OnDemand(str(o["transform"]), {str(k): str(v) for k, v in o["outputs"].items()})
                    for o in data.get("on_demand", [])
                ],
                nullable=[str(f) for f in data.get("nullable", [])],
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ContractError(f"{SERVING}: malformed ({type(exc).__name__}: {exc})") from exc
        unknown = [t for t, _ in contract.request_fields.items() if t in contract.join_keys]
        if unknown:
            raise ContractError(f"{SERVING}: request_fields {unknown} are also join keys")
        for dtype in contract.request_fields.values():
            if dtype not in FIELD_TYPES:
                raise ContractError(
                    f"{SERVING}: request field type '{dtype}' is not one of {sorted(FIELD_TYPES)}"
                )
        return contract

    def stored_features(self) -> list[str]:
        return [f for names in self.views.values() for f in names]

    def transforms(self) -> list[tuple[Callable[[Mapping[str, Sequence[Any]]], Columns], OnDemand]]:
        """The on-demand transforms, imported (only from the `features` package)."""
        return [(load_transform(o.transform), o) for o in self.on_demand]


def load_transform(path: str) -> Callable[[Mapping[str, Sequence[Any]]], Columns]:
    module_name, _, attr = path.partition(":")
    if module_name.split(".")[0] != TRANSFORM_PACKAGE or not attr:
        raise ContractError(
            f"{SERVING}: on-demand transform '{path}' is not a function of the "
            f"'{TRANSFORM_PACKAGE}' package (package.module:function)"
        )
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ContractError(
            f"{SERVING}: cannot import on-demand transform '{path}': {exc}"
        ) from exc
    return fn  # type: ignore[no-any-return]
