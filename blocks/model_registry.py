"""Where registered models live."""

from __future__ import annotations

from typing import Any

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from tasks.registry.store import Registry


class ModelRegistry(Block):
    """A model registry: numbered versions and aliases under a local folder or s3:// URI.

    `storage_options` and the secret reach the registry's file system (every read, write and
    conditional claim); a store without conditional writes is refused when the registry opens.
    """

    _block_type_name = "MLOps Model Registry"
    _description = "Root URI of the model registry (a local folder or s3://bucket/prefix)."

    root_uri: str = Field(default="data/registry", description="Folder or s3:// URI.")
    storage_options: dict[str, Any] = Field(
        default_factory=dict,
        description="fsspec options, e.g. s3fs: {endpoint_url, key, client_kwargs: {...}}.",
    )
    secret: SecretStr | None = Field(default=None, description="Credential for the store, if any.")
    secret_field: str = Field(
        default="secret", min_length=1, description="The fsspec option the secret goes into."
    )

    def registry(self) -> Registry:
        options = dict(self.storage_options)
        if self.secret is not None:
            options[self.secret_field] = self.secret.get_secret_value()
        return Registry(self.root_uri, options)
