"""Registered versions loaded back as predictors, through the registry (any fsspec root)."""

from __future__ import annotations

from deployments.predictor import LoadedModel, loaded_model
from tasks.registry.store import Registry


def load_model(registry: Registry, name: str, ref: int | str) -> LoadedModel:
    """Load a version (number or alias), calibrated if it stores a calibration; RegistryError if
    it does not exist."""
    version = registry.get(name, ref)
    return loaded_model(
        name,
        version.version,
        version.metadata,
        version.files,
        lambda f: registry.read(name, version.version, f),
    )
