"""Generating a dataset's demo data through the generator its spec names."""

from __future__ import annotations

from prefect import task

from tasks.dataset_spec import GenerateOptions, import_object
from tasks.datasets import get_dataset


def generate_data(dataset: str, out_uri: str, options: GenerateOptions) -> dict[str, int]:
    """Write the dataset's raw tables under `out_uri`; returns rows written per table."""
    spec = get_dataset(dataset)
    if spec.generator is None:
        raise ValueError(f"dataset '{dataset}' has no generator in its spec")
    generator = import_object(spec.generator)
    return dict(generator(out_uri, options))


generate_data_task = task(name="generate-data")(generate_data)
