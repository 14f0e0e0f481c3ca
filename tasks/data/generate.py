"""Generating a dataset's demo data through the generator its spec names."""

from __future__ import annotations

from tasks.specs.dataset_spec import DatasetSpec, GenerateOptions, import_object


def generate_data(spec: DatasetSpec, out_uri: str, options: GenerateOptions) -> dict[str, int]:
    """Write the dataset's raw tables under `out_uri`; returns rows written per table."""
    if spec.generator is None:
        raise ValueError(f"dataset '{spec.name}' has no generator in its spec")
    generator = import_object(spec.generator)
    return dict(generator(out_uri, options))
