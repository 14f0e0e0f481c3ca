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
columns (request fields and stored features) and return columns. Only functions defined in one
dataset's folder (`features/<dataset>/`, the same one for all of a contract's transforms) are
imported, and each module's file is checked before it is imported (`dataset_object`, the loader
dataset specs use too), so a contract cannot make a server load arbitrary code.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SERVING = "serving.json"
HOLDOUT = "holdout.parquet"  # held-out test rows and their offline scores: the smoke test
TRANSFORM_PACKAGE = "features"
FIELD_TYPES = {"float64": float, "int64": int, "string": str, "bool": bool}

Columns = dict[str, list[Any]]


class ContractError(ValueError):
    """A malformed serving contract; names the field."""


class CodeReferenceError(ImportError):
    """A `features.<dataset>.<module>:<function>` reference refused or not importable."""


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
        """The on-demand transforms, imported (only from one dataset's folder)."""
        modules = [o.transform.split(":")[0].split(".") for o in self.on_demand]
        datasets = sorted({m[1] if len(m) > 1 else "" for m in modules})
        if len(datasets) > 1:  # refused before anything is imported
            raise ContractError(
                f"{SERVING}: on_demand: transforms of several datasets {datasets}; a version "
                "serves the features of one"
            )
        return [(load_transform(o.transform), o) for o in self.on_demand]


def load_transform(path: str) -> Callable[[Mapping[str, Sequence[Any]]], Columns]:
    """An on-demand transform: a function of a dataset's folder (see `dataset_object`)."""
    try:
        fn = dataset_object(path)
    except CodeReferenceError as exc:
        raise ContractError(f"{SERVING}: on-demand transform: {exc}") from exc
    if not callable(fn):
        raise ContractError(f"{SERVING}: on-demand transform '{path}' is not callable")
    return fn  # type: ignore[no-any-return]


def dataset_object(path: str, dataset: str | None = None) -> Any:
    """Import `features.<dataset>[.<module>...]:<name>`, an object defined in that dataset's
    folder `features/<dataset>/` (of `dataset`, if given).

    Refused with a CodeReferenceError, before anything of it is imported: another package or
    dataset, relative or malformed names, a module or package whose file (symlinks resolved)
    lies outside the dataset's folder, and a name the module took from elsewhere.
    """
    module_name, colon, attr = path.partition(":")
    parts = module_name.split(".")
    if (
        not colon
        or len(parts) < 2
        or parts[0] != TRANSFORM_PACKAGE
        or not all(p.isidentifier() for p in [*parts, attr])
    ):
        raise CodeReferenceError(
            f"'{path}' is not a function of the '{TRANSFORM_PACKAGE}' package "
            f"({TRANSFORM_PACKAGE}.<dataset>.<module>:<function>)"
        )
    package = f"{TRANSFORM_PACKAGE}.{parts[1]}"
    if dataset is not None and parts[1] != dataset:
        raise CodeReferenceError(
            f"'{path}' is outside dataset '{dataset}': only modules of "
            f"{TRANSFORM_PACKAGE}.{dataset} may be named"
        )
    folder = _dataset_folder(package, path)
    for i in range(3, len(parts) + 1):
        _check_inside(".".join(parts[:i]), folder, path)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the dataset's own code failing at import
        raise CodeReferenceError(
            f"cannot import '{module_name}': {type(exc).__name__}: {exc}"
        ) from exc
    if not hasattr(module, attr):
        raise CodeReferenceError(f"module '{module_name}' has no attribute '{attr}'")
    obj = getattr(module, attr)
    origin = str(getattr(obj, "__module__", None))
    if origin != package and not origin.startswith(f"{package}."):
        raise CodeReferenceError(
            f"'{path}' is not a function or class defined in {package} (its module: {origin})"
        )
    return obj


def _find(name: str, path: str) -> Any:
    try:
        spec = importlib.util.find_spec(name)  # imports the parent package only
    except Exception as exc:  # finding it imports the parent package, the dataset's code
        raise CodeReferenceError(
            f"'{path}': cannot find module '{name}': {type(exc).__name__}: {exc}"
        ) from exc
    if spec is None:
        raise CodeReferenceError(f"'{path}': no module named '{name}'")
    return spec


def _dataset_folder(package: str, path: str) -> Path:
    """The dataset package's folder, refused if it is a symlink or not a plain package."""
    spec = _find(package, path)
    locations = list(spec.submodule_search_locations or [])
    if not spec.has_location or len(locations) != 1:
        raise CodeReferenceError(f"'{path}': '{package}' is not a dataset folder (a package)")
    folder = Path(locations[0])
    resolved = _resolve(folder, path)
    if resolved != _resolve(folder.parent, path) / folder.name:
        raise CodeReferenceError(
            f"'{path}': dataset folder {folder} leads outside the '{TRANSFORM_PACKAGE}' "
            f"package (to {resolved})"
        )
    if not _resolve(Path(spec.origin), path).is_relative_to(resolved):
        raise CodeReferenceError(f"'{path}': {spec.origin} lies outside {folder}")
    return resolved


def _check_inside(name: str, folder: Path, path: str) -> None:
    """Refuse module `name` unless its file (and, for a package, its folders) lies in `folder`."""
    spec = _find(name, path)
    files = [*(spec.submodule_search_locations or [])]
    if spec.has_location:
        files.append(spec.origin)
    elif not files:  # built-in or frozen: no file at all
        raise CodeReferenceError(f"'{path}': module '{name}' is not a file of {folder}")
    outside = [f for f in files if not _resolve(Path(f), path).is_relative_to(folder)]
    if outside:
        raise CodeReferenceError(
            f"'{path}': module '{name}' loads {outside[0]}, outside the dataset folder {folder}"
        )


def _resolve(file: Path, path: str) -> Path:
    try:
        return file.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise CodeReferenceError(f"'{path}': cannot resolve {file}: {exc}") from exc
