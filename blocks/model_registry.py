"""Where registered models live."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field

from tasks.registry.store import Registry


class ModelRegistry(Block):
    """A model registry: numbered versions and aliases under a local folder or fsspec URI."""

    _block_type_name = "MLOps Model Registry"
    _description = "Root URI of the model registry (a local folder, s3://, gs://, ...)."

    root_uri: str = Field(default="data/registry", description="Folder or fsspec URI.")

    def registry(self) -> Registry:
        return Registry(self.root_uri)
