"""The run-to-run data-quality checks data_prep applies before publishing."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field

from tasks.data.quality import QualityPolicy


class DataQualityPolicy(Block):
    """Which comparisons with the last published snapshot fail a run and which only warn."""

    _block_type_name = "MLOps Data Quality Policy"
    _description = (
        "Row-count drop, null-rate rise, mean and range shifts, new or vanished categories: "
        "each with its limit and fail / warn / off."
    )

    policy: QualityPolicy = Field(default_factory=QualityPolicy)
