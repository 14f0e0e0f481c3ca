"""Generating a dataset's demo data through the generator its spec names."""

from __future__ import annotations

from datetime import date

from prefect import task

from tasks.dataset_spec import import_object
from tasks.datasets import get_dataset


def generate_data(
    dataset: str,
    out_uri: str,
    *,
    rows: int,
    seed: int,
    chunk_rows: int = 1_000_000,
    dirty_rate: float = 0.0,
    drift_start: date | None = None,
    covariate_drift: tuple[str, ...] = (),
    concept_drift: bool = False,
) -> dict[str, int]:
    """Write the dataset's raw tables under `out_uri`; returns rows written per table."""
    spec = get_dataset(dataset)
    if spec.generator is None:
        raise ValueError(f"dataset '{dataset}' has no generator in its spec")
    generator = import_object(spec.generator)
    return generator(
        out_uri,
        rows=rows,
        seed=seed,
        chunk_rows=chunk_rows,
        dirty_rate=dirty_rate,
        drift_start=drift_start,
        covariate_drift=covariate_drift,
        concept_drift=concept_drift,
    )


generate_data_task = task(name="generate-data")(generate_data)
