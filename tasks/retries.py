"""When a Prefect task's retry can help: failures of I/O (a remote store, a locked database),
not bad data or a bug, which fail the same way every time. Plain code, no Prefect import."""

from __future__ import annotations

import sqlite3
from typing import Any

# I/O errors a second try cannot fix
PERMANENT = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


def is_transient(error: BaseException | None) -> bool:
    if isinstance(error, sqlite3.OperationalError):  # "database is locked"
        return True
    return isinstance(error, OSError) and not isinstance(error, PERMANENT)


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """A Prefect `retry_condition_fn`: retry only transient I/O failures."""
    error = state.data if isinstance(state.data, BaseException) else None
    if error is None:
        try:
            state.result()
        except BaseException as exc:
            error = exc
    return is_transient(error)
