"""Where a dataset's raw files live."""

from __future__ import annotations

from typing import Literal

from prefect.blocks.core import Block
from pydantic import Field, SecretStr


class DataSource(Block):
    """Raw input files: a local folder or any fsspec URI (s3://, gs://, abfs://, ...)."""

    _block_type_name = "MLOps Data Source"
    _description = "Root URI and format of a dataset's raw tables (one sub-folder per table)."

    uri: str = Field(description="Folder holding one sub-folder (or file) per table.")
    format: Literal["parquet", "csv"] = "parquet"
    storage_options: dict[str, str] = Field(
        default_factory=dict, description="fsspec options (endpoint, region ...)."
    )
    secret: SecretStr | None = Field(default=None, description="Credential for the store, if any.")
