"""Where a dataset's raw files live, and how to open them."""

from __future__ import annotations

from typing import Any, Literal

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from tasks.data.ingest import SourceAccess


class DataSource(Block):
    """Raw input files: a local folder or any fsspec URI (s3://, gs://, abfs://, ...).

    `storage_options` and the secret reach every read of the source (listing, key scans,
    validated reads on the Dask workers) and `mlops datasets init --data-source`.
    """

    _block_type_name = "MLOps Data Source"
    _description = "Root URI and format of a dataset's raw tables (one sub-folder per table)."

    uri: str = Field(description="Folder holding one sub-folder (or file) per table.")
    format: Literal["parquet", "csv"] = "parquet"
    storage_options: dict[str, Any] = Field(
        default_factory=dict,
        description="fsspec options, e.g. s3fs: {endpoint_url, key, client_kwargs: {...}}.",
    )
    secret: SecretStr | None = Field(default=None, description="Credential for the store, if any.")
    secret_field: str = Field(
        default="secret",
        min_length=1,
        description="The fsspec option the secret goes into: s3fs 'secret' (with 'key' in "
        "storage_options), abfs 'account_key', gcs 'token'.",
    )

    def access(self) -> SourceAccess:
        """The options and secret for the plain code (the secret still masked)."""
        return SourceAccess(
            storage_options=dict(self.storage_options),
            secret=self.secret,
            secret_field=self.secret_field,
        )
