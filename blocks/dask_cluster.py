"""Which Dask cluster the preprocessing runs on."""

from __future__ import annotations

from typing import Any

import dask
from distributed import LocalCluster
from prefect.blocks.core import Block
from prefect_dask import DaskTaskRunner
from pydantic import Field

MMAP_THRESHOLD = 32 * 1024 * 1024


class DaskCluster(Block):
    """An existing cluster by address, or a LocalCluster sized here (the embedded default)."""

    _block_type_name = "MLOps Dask Cluster"
    _description = "A Dask scheduler address, or the size of a LocalCluster started per flow run."

    address: str | None = Field(default=None, description="tcp://host:8786 of a running scheduler.")
    n_workers: int = Field(default=2, ge=1, le=256)
    threads_per_worker: int = Field(default=1, ge=1, le=64)
    memory_limit: str = Field(
        default="4GiB",
        description="Per local worker process, e.g. '4GiB' (with processes off, none: see "
        "local_kwargs).",
    )
    processes: bool = True

    def local_kwargs(self) -> dict[str, Any]:
        """The LocalCluster's arguments. Workers in this process (processes off) get no memory
        limit: Dask would hold it against the whole process's memory, and a long-lived process
        (a test session, a worker's flow run) past it pauses them for good, hanging the run."""
        return {
            "n_workers": self.n_workers,
            "threads_per_worker": self.threads_per_worker,
            "memory_limit": self.memory_limit if self.processes else 0,
            "processes": self.processes,
            "dashboard_address": None,
        }

    def task_runner(self) -> DaskTaskRunner:
        if self.address:
            return DaskTaskRunner(address=self.address)
        return DaskTaskRunner(cluster_class=local_cluster, cluster_kwargs=self.local_kwargs())


def local_cluster(**kwargs: Any) -> LocalCluster:
    """A LocalCluster whose workers allocate pandas-sized arrays from the heap.

    Dask's nanny sets MALLOC_TRIM_THRESHOLD_ so that workers return memory to the OS; setting
    it also switches off glibc's dynamic mmap threshold, so every array over 128 KiB is mmapped
    and page-faulted afresh, which made each partition of this pipeline ~1.7x slower. A fixed
    32 MiB mmap threshold (glibc's maximum) keeps the speed and still returns large blocks.
    """
    env = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
    env.setdefault("MALLOC_MMAP_THRESHOLD_", MMAP_THRESHOLD)
    with dask.config.set({"distributed.nanny.pre-spawn-environ": env}):
        return LocalCluster(**kwargs)
