"""Which Dask cluster the preprocessing runs on."""

from __future__ import annotations

from prefect.blocks.core import Block
from prefect_dask import DaskTaskRunner
from pydantic import Field


class DaskCluster(Block):
    """An existing cluster by address, or a LocalCluster sized here (the embedded default)."""

    _block_type_name = "MLOps Dask Cluster"
    _description = "A Dask scheduler address, or the size of a LocalCluster started per flow run."

    address: str | None = Field(default=None, description="tcp://host:8786 of a running scheduler.")
    n_workers: int = Field(default=2, ge=1, le=256)
    threads_per_worker: int = Field(default=1, ge=1, le=64)
    memory_limit: str = Field(default="4GiB", description="Per local worker, e.g. '4GiB'.")
    processes: bool = True

    def task_runner(self) -> DaskTaskRunner:
        if self.address:
            return DaskTaskRunner(address=self.address)
        return DaskTaskRunner(
            cluster_class="distributed.LocalCluster",
            cluster_kwargs={
                "n_workers": self.n_workers,
                "threads_per_worker": self.threads_per_worker,
                "memory_limit": self.memory_limit,
                "processes": self.processes,
                "dashboard_address": None,
            },
        )
