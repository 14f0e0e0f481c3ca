"""generate_data: write a dataset's synthetic raw tables (the demo's input), optionally drifted."""

from __future__ import annotations

from datetime import date

from prefect import flow
from pydantic import BaseModel, ConfigDict, Field

from tasks.data import generate_data_task
from tasks.datasets import DEFAULT_DATASET, get_dataset


class GenerateDataParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(
        default=DEFAULT_DATASET, description="A registered dataset with a generator."
    )
    rows: int = Field(
        default=100_000, ge=1_000, le=20_000_000, description="Rows of the main table."
    )
    seed: int = Field(default=0, ge=0)
    out_uri: str | None = Field(default=None, description="Default: the spec's source URI.")
    chunk_rows: int = Field(default=1_000_000, ge=1_000, le=5_000_000, description="Rows per file.")
    dirty_rate: float = Field(default=0.0, ge=0.0, le=0.2, description="Share of defective rows.")
    drift_start: date | None = Field(default=None, description="Drift applies from this date on.")
    covariate_drift: list[str] = Field(default_factory=list, description="Columns to shift.")
    concept_drift: bool = Field(default=False, description="Change the label's relation too.")


@flow(name="generate-data")
def generate_data(params: GenerateDataParams = GenerateDataParams()) -> dict[str, int]:  # noqa: B008
    """Generate a dataset's raw tables; returns rows written per table."""
    out_uri = params.out_uri or get_dataset(params.dataset).source.uri
    return generate_data_task(
        params.dataset,
        out_uri,
        rows=params.rows,
        seed=params.seed,
        chunk_rows=params.chunk_rows,
        dirty_rate=params.dirty_rate,
        drift_start=params.drift_start,
        covariate_drift=tuple(params.covariate_drift),
        concept_drift=params.concept_drift,
    )
