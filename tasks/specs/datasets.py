"""The dataset registry: every `features/<name>/dataset.yaml` is a dataset the flows can run on."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import features
from tasks.specs.dataset_spec import DatasetSpec, SpecError, load_spec

DATASETS_ROOT = Path(features.__file__).parent
DEFAULT_DATASET = "credit_risk"


def spec_paths() -> dict[str, Path]:
    return {p.parent.name: p for p in sorted(DATASETS_ROOT.glob("*/dataset.yaml"))}


@cache
def get_dataset(name: str) -> DatasetSpec:
    paths = spec_paths()
    if name not in paths:
        raise SpecError(f"unknown dataset '{name}'; registered: {sorted(paths)}")
    spec = load_spec(paths[name])
    if spec.name != name:
        raise SpecError(f"{paths[name]}: name '{spec.name}' must match its folder '{name}'")
    return spec


def list_datasets() -> list[DatasetSpec]:
    return [get_dataset(name) for name in spec_paths()]


def model_name(service: str) -> str:
    """The registry name of a feature service's model (registry names use dashes)."""
    return service.replace("_", "-")


def default_model() -> str:
    """The model of the default dataset's first feature service."""
    return model_name(next(iter(get_dataset(DEFAULT_DATASET).feature_services)))
