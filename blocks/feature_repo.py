"""Where Feast keeps its registry and online store."""

from __future__ import annotations

from typing import Literal

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from tasks.feature_store.store import StoreSettings


class FeatureRepo(Block):
    """A Feast repository: SQLite online store by default, Redis for scale."""

    _block_type_name = "MLOps Feature Repo"
    _description = "Feast repo path, project, registry and online store (SQLite or Redis)."

    repo_path: str = "features"
    project: str = Field(default="mlops", pattern=r"^[a-z][a-z0-9_]*$")
    registry_path: str = "data/feast/registry.db"
    online_store: Literal["sqlite", "redis"] = "sqlite"
    sqlite_path: str = "data/feast/online_store.db"
    redis_connection_string: SecretStr | None = Field(
        default=None, description="host:port[,password=...] for the Redis online store."
    )
    retrieval_memory_mb: float = Field(
        default=2048,
        gt=0,
        description="Working memory of a view's point-in-time join; larger joins are split "
        "into entity-key partitions spilled to disk.",
    )
    spill_dir: str | None = Field(default=None, description="Where they spill (default: tmp).")
    retrieval_dask_address: str | None = Field(
        default=None,
        description="tcp://host:8786: join those partitions on this Dask cluster (its workers "
        "must see spill_dir).",
    )

    def settings(self) -> StoreSettings:
        redis = self.redis_connection_string
        return StoreSettings(
            repo_path=self.repo_path,
            project=self.project,
            registry_path=self.registry_path,
            online_store=self.online_store,
            sqlite_path=self.sqlite_path,
            redis_connection_string=redis.get_secret_value() if redis else "",
            retrieval_memory_mb=self.retrieval_memory_mb,
            spill_dir=self.spill_dir,
            retrieval_dask_address=self.retrieval_dask_address,
        )
