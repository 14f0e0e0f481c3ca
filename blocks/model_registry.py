"""Where registered models live."""

from __future__ import annotations

from typing import Any, Literal

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, model_validator

from tasks.registry.store import Registry


class ModelRegistry(Block):
    """A model registry: numbered versions and aliases under a local folder or s3:// URI, or
    in an MLflow tracking server's model registry (`backend: mlflow`, `root_uri` its URL).

    `storage_options` and the secret reach the registry's file system (every read, write and
    conditional claim); a store without conditional writes is refused when the registry opens.
    The MLflow client takes its credentials from MLflow's own environment variables
    (MLFLOW_TRACKING_TOKEN, ...), so those two fields are refused with it.
    """

    _block_type_name = "MLOps Model Registry"
    _description = "Where models are registered: a folder, s3:// URI, or MLflow tracking URL."

    backend: Literal["fsspec", "mlflow"] = Field(
        default="fsspec", description="fsspec: a folder or s3://; mlflow: a tracking server."
    )
    root_uri: str = Field(
        default="data/registry", description="Folder or s3:// URI; the MLflow tracking URL."
    )
    cache_dir: str | None = Field(
        default=None, description="mlflow: where downloaded versions are kept (default: tmp)."
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict,
        description="fsspec options, e.g. s3fs: {endpoint_url, key, client_kwargs: {...}}.",
    )
    secret: SecretStr | None = Field(default=None, description="Credential for the store, if any.")
    secret_field: str = Field(
        default="secret", min_length=1, description="The fsspec option the secret goes into."
    )

    @model_validator(mode="after")
    def _options_of_the_backend(self) -> ModelRegistry:
        if self.backend == "mlflow" and (self.storage_options or self.secret is not None):
            raise ValueError(
                "backend mlflow: storage_options and secret are fsspec's; give the MLflow "
                "client its credentials through MLFLOW_TRACKING_TOKEN (or _USERNAME/_PASSWORD)"
            )
        if self.backend == "fsspec" and self.cache_dir is not None:
            raise ValueError("cache_dir is for backend mlflow (an fsspec registry reads in place)")
        return self

    def registry(self) -> Any:
        """The registry the flows use: `Registry`, or `MlflowRegistry` (the same interface)."""
        if self.backend == "mlflow":
            from tasks.registry.mlflow_store import MlflowRegistry

            return MlflowRegistry(self.root_uri, self.cache_dir)
        options = dict(self.storage_options)
        if self.secret is not None:
            options[self.secret_field] = self.secret.get_secret_value()
        return Registry(self.root_uri, options)
