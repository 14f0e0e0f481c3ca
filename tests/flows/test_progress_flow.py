"""Progress artifacts of real runs (tasks/progress.py), read back from the session's server."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

import pytest
from prefect import flow, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterType,
)

from tasks.progress import progress, run_logger

pytestmark = pytest.mark.flows


def _progress_artifacts(flow_run_id: UUID | None = None) -> list:
    only = ArtifactFilter(
        type=ArtifactFilterType(any_=["progress"]),
        flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]) if flow_run_id else None,
    )
    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=only)


@task
def _count(n: int) -> tuple[int, str]:
    with progress("counting", n) as bar:
        for _ in range(n):
            bar.advance()
    return bar.updates, run_logger("tests").name  # the task run's logger, not "tests"


@flow
def _counting(n: int) -> tuple[int, str]:
    return _count(n)


def test_a_task_runs_progress_artifact_ends_at_100() -> None:
    state = _counting(10_000, return_state=True)
    updates, logger = state.result()
    assert logger == "prefect.task_runs"
    assert updates <= 10  # a second's work at most: whole percents, at most once a second
    (artifact,) = _progress_artifacts(state.state_details.flow_run_id)
    assert artifact.description == "counting" and artifact.data == 100.0
    assert artifact.task_run_id is not None


def test_generation_and_preprocessing_report_progress(prepared: Path) -> None:
    """`prepared` ran generate_data (3 chunks) and data_prep on a threads Dask cluster."""
    ended = {a.description for a in _progress_artifacts() if a.data == 100.0}
    assert {
        "credit_risk: generating 150,000 transactions",
        "credit_risk: scanning keys",
        "credit_risk: validating and building feature tables",
    } <= ended
