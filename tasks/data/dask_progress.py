"""`dask.compute` with progress (tasks/progress.py) on whichever scheduler dask would use.

On a distributed client the unit is one computed output (a validated file, a written
partition, a table's summary); on dask's local schedulers it is one finished graph task.
"""

from __future__ import annotations

from typing import Any

import dask
from dask.base import get_scheduler, unpack_collections
from dask.callbacks import Callback
from distributed import Client, as_completed

from tasks.progress import Progress, progress


class _LocalProgress(Callback):  # type: ignore[misc]
    """Finished tasks of dask's local schedulers (sync, threads, processes) as progress."""

    def __init__(self, bar: Progress) -> None:
        super().__init__()
        self.bar = bar

    def _start_state(self, dsk: Any, state: dict[str, Any]) -> None:
        total = sum(len(state[k]) for k in ("ready", "waiting", "running", "finished"))
        self.bar.update(len(state["finished"]), total)

    def _posttask(self, key: Any, result: Any, dsk: Any, state: dict[str, Any], id: Any) -> None:
        self.bar.update(len(state["finished"]))


def compute(*args: Any, description: str) -> tuple[Any, ...]:
    """`dask.compute(*args)` (collections nested in lists and dicts too), with progress."""
    collections, repack = unpack_collections(*args, traverse=True)
    if not collections:
        return args
    client = getattr(get_scheduler(collections=collections), "__self__", None)
    if not isinstance(client, Client):
        with progress(description, total=0) as bar, _LocalProgress(bar):
            return tuple(dask.compute(*args))
    futures = client.compute(list(collections))
    try:
        with progress(description, total=len(futures)) as bar:
            for future in as_completed(futures):
                if future.status == "error":
                    future.result()  # raises the task's own error, as dask.compute would
                bar.advance()
        return tuple(repack(client.gather(futures)))
    except BaseException:
        client.cancel(futures)
        raise
