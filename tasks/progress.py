"""Progress of long work: a Prefect progress artifact inside a run, a rich bar on a terminal.

`with progress("Generating", total=n) as bar: ... bar.advance()`. Inside a Prefect flow or task
run it creates one progress artifact and updates it at most once a second, and only when a whole
percent has passed; on a terminal (stderr a TTY, or MLOPS_PROGRESS=1; MLOPS_PROGRESS=0: never)
it draws a rich bar on stderr. Otherwise it only counts. It stays plain: Prefect is imported
only when a run has already loaded it, and no artifact failure ever fails the work.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast
from uuid import UUID

if TYPE_CHECKING:
    from rich.progress import Progress as RichProgress
    from rich.progress import TaskID

ENV = "MLOPS_PROGRESS"
MIN_INTERVAL_S = 1.0  # between two artifact updates
log = logging.getLogger(__name__)


def in_run() -> bool:
    """Whether this code runs inside a Prefect flow or task run (never imports Prefect)."""
    if "prefect" not in sys.modules:
        return False
    from prefect.context import FlowRunContext, TaskRunContext  # noqa: TID251

    return TaskRunContext.get() is not None or FlowRunContext.get() is not None


def run_logger(name: str) -> logging.Logger | logging.LoggerAdapter[Any]:
    """The Prefect run's logger inside a run (its lines reach the run's log), else `name`'s."""
    if in_run():
        from prefect.logging import get_run_logger  # noqa: TID251

        return get_run_logger()
    return logging.getLogger(name)


def show_bar() -> bool:
    """Whether to draw a terminal bar: MLOPS_PROGRESS=1/0 decides, else whether stderr is a TTY."""
    forced = os.environ.get(ENV, "").strip().lower()
    if forced:
        return forced not in ("0", "false", "no", "off")
    return sys.stderr.isatty()


class _Artifact:
    """One progress artifact of the current run; it stops trying at its first failure."""

    def __init__(self, artifact_id: UUID) -> None:
        self.id: UUID | None = artifact_id

    @classmethod
    def create(cls, description: str, key: str | None) -> _Artifact | None:
        try:
            from prefect.artifacts import create_progress_artifact  # noqa: TID251

            made = create_progress_artifact(0.0, key=key, description=description, _sync=True)  # type: ignore[call-arg]
            return cls(cast(UUID, made))
        except Exception as exc:  # no API, a bad key: the work goes on without it
            log.debug("no progress artifact for %r: %s", description, exc)
            return None

    def update(self, percent: float) -> None:
        if self.id is None:
            return
        try:
            from prefect.artifacts import update_progress_artifact  # noqa: TID251

            update_progress_artifact(self.id, percent, _sync=True)  # type: ignore[call-arg]
        except Exception as exc:
            log.debug("progress artifact %s not updated: %s", self.id, exc)
            self.id = None


class _Display:
    """The one rich display on stderr that every open bar shares (rich allows one at a time)."""

    _lock = threading.Lock()
    _rich: RichProgress | None = None
    _open = 0

    @classmethod
    def add(cls, description: str, total: float) -> TaskID:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        with cls._lock:
            if cls._rich is None:
                cls._rich = Progress(
                    TextColumn("{task.description}"),
                    BarColumn(),
                    TaskProgressColumn(),
                    MofNCompleteColumn(),
                    TimeElapsedColumn(),
                    TimeRemainingColumn(),
                    console=Console(stderr=True),
                )
                cls._rich.start()
            cls._open += 1
            return cls._rich.add_task(description, total=total or None)

    @classmethod
    def update(cls, task: TaskID, done: float, total: float) -> None:
        rich = cls._rich
        if rich is not None:
            rich.update(task, completed=done, total=total or None)

    @classmethod
    def remove(cls, task: TaskID) -> None:
        with cls._lock:
            if cls._rich is None:
                return
            cls._open -= 1
            if cls._open <= 0:
                cls._rich.stop()
                cls._rich, cls._open = None, 0


class Progress:
    """Counts `done` of `total` units; see the module's docstring for where it shows."""

    def __init__(
        self,
        description: str,
        total: float,
        *,
        key: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        interval: float = MIN_INTERVAL_S,
    ) -> None:
        self.description, self.key = description, key
        self.total, self.done = max(float(total), 0.0), 0.0
        self.updates = 0  # artifact updates sent
        self._clock, self._interval = clock, interval
        self._artifact: _Artifact | None = None
        self._task: TaskID | None = None
        self._sent_percent, self._sent_value, self._sent_at = 0, 0.0, -math.inf

    @property
    def percent(self) -> float:
        if self.total <= 0:
            return 0.0
        return min(100.0, max(0.0, 100.0 * self.done / self.total))

    def __enter__(self) -> Progress:
        if in_run():
            self._artifact = _Artifact.create(self.description, self.key)
            self._sent_at = self._clock()
        if show_bar():
            self._task = _Display.add(self.description, self.total)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:  # finished: early stopping may end before `total`
            self.total = self.total or 1.0
            self.done = max(self.done, self.total)
        if self._task is not None:
            _Display.update(self._task, self.done, self.total)
            _Display.remove(self._task)
            self._task = None
        if self._artifact is not None:
            if round(self.percent, 2) != self._sent_value:
                self._send(self.percent)
            self._artifact = None

    def advance(self, n: float = 1) -> None:
        self.update(self.done + n)

    def update(self, done: float, total: float | None = None) -> None:
        """Set the units done (and the total, once it is known)."""
        self.done = done
        if total is not None:
            self.total = max(float(total), 0.0)
        if self._task is not None:
            _Display.update(self._task, self.done, self.total)
        if self._artifact is not None:
            percent = self.percent
            if int(percent) > self._sent_percent and (
                self._clock() - self._sent_at >= self._interval
            ):
                self._send(percent)

    def _send(self, percent: float) -> None:
        assert self._artifact is not None
        self._sent_value = round(percent, 2)
        self._artifact.update(self._sent_value)
        self.updates += 1
        self._sent_percent, self._sent_at = int(percent), self._clock()


def progress(description: str, total: float, *, key: str | None = None) -> Progress:
    """A `Progress` to use as a context manager: `with progress("Rounds", 1000) as bar: ...`."""
    return Progress(description, total, key=key)
