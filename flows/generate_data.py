"""generate_data: write a dataset's synthetic raw tables (the demo's input), optionally drifted."""

from __future__ import annotations

from prefect import flow
from pydantic import Field

from blocks import resolve_dataset
from tasks.data.prefect_tasks import generate_data_task
from tasks.specs.dataset_spec import GenerateOptions
from tasks.specs.datasets import DEFAULT_DATASET


class GenerateDataParams(GenerateOptions):
    dataset: str = Field(default=DEFAULT_DATASET, description="A dataset with a generator.")
    out_uri: str | None = Field(default=None, description="Default: the spec's source URI.")


@flow(name="generate-data")
def generate_data(params: GenerateDataParams = GenerateDataParams()) -> dict[str, int]:  # noqa: B008
    """Generate a dataset's raw tables; returns rows written per table."""
    spec = resolve_dataset(params.dataset)
    options = GenerateOptions(**params.model_dump(exclude={"dataset", "out_uri"}))
    return generate_data_task(spec, params.out_uri or spec.source.uri, options)
