"""The data stage's Prefect tasks: thin wrappers adding names, retries, timeouts and artifacts.

Retries only where a second try can succeed, and only on transient I/O errors: planning and
building read the raw source (a remote store may fail for a moment; building writes into its own
staging folder, so a second try overwrites the first). Bad input fails the same way every time.
Generation has none: a generator run is long and local. Publishing is in
tasks/feature_store/prefect_tasks.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pandas as pd
from distributed import get_worker
from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect_dask import get_dask_client

from tasks.artifacts import artifact_key
from tasks.data.freshness import labelled_rows
from tasks.data.generate import generate_data
from tasks.data.ingest import SourceAccess
from tasks.data.preprocess import PrepReport, SourcePlan, build_features, plan_sources
from tasks.data.publish import current_snapshot, keep_quarantine, snapshot_uri
from tasks.data.quality import QualityCheck, QualityPolicy, check_rows, enforce, quality_checks
from tasks.data.report import prep_markdown, prep_rows
from tasks.retries import retry_transient
from tasks.specs.dataset_spec import DatasetSpec, GenerateOptions

HOUR = 3_600


@contextmanager
def on_cluster() -> Iterator[None]:
    """Inside a Dask worker, send Dask collections to the whole cluster, not this one worker."""
    try:
        get_worker()
    except ValueError:
        yield
        return
    with get_dask_client():
        yield


@task(name="generate-data", timeout_seconds=6 * HOUR)
def generate_data_task(spec: DatasetSpec, out_uri: str, options: GenerateOptions) -> dict[str, int]:
    return generate_data(spec, out_uri, options)


@task(
    name="plan-sources",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=[5, 30],
    retry_condition_fn=retry_transient,
    timeout_seconds=HOUR,
)
def plan_sources_task(spec: DatasetSpec, source_uri: str, access: SourceAccess) -> SourcePlan:
    with on_cluster():
        return plan_sources(spec, source_uri, access)


@task(
    name="build-features",
    cache_policy=NO_CACHE,
    retries=1,
    retry_delay_seconds=30,
    retry_condition_fn=retry_transient,
    timeout_seconds=6 * HOUR,
)
def build_features_task(
    spec: DatasetSpec,
    plan: SourcePlan,
    staging_uri: str,
    now: pd.Timestamp,
    access: SourceAccess,
) -> PrepReport:
    with on_cluster():
        return build_features(spec, plan, staging_uri, now, access)


@task(name="keep-quarantine", cache_policy=NO_CACHE)
def keep_quarantine_task(staging: str, output_uri: str, snapshot: str) -> str | None:
    return keep_quarantine(staging, output_uri, snapshot)


@task(name="check-data-quality", cache_policy=NO_CACHE)
def check_quality_task(
    spec: DatasetSpec,
    report: PrepReport,
    staging: str,
    output_uri: str,
    policy: QualityPolicy,
    allow_empty: bool,
    max_reject_rate: float | None,
) -> list[QualityCheck]:
    """The guards, published as a table (failures first) before a failure stops the run."""
    current = current_snapshot(output_uri)
    previous = snapshot_uri(output_uri, current) if current else None
    checks = quality_checks(spec, report, staging, previous, policy, allow_empty, max_reject_rate)
    failing = sum(c.failing for c in checks)
    create_table_artifact(
        table=check_rows(checks),
        key=artifact_key("data-prep", spec.name, "checks"),
        description=f"Data-quality checks: {spec.name}: "
        + (f"{failing} failing, nothing published" if failing else "all passed"),
    )
    enforce(checks)
    return checks


@task(name="report-data-prep")
def report_data_prep(dataset: str, report: PrepReport, output_uri: str) -> None:
    key = artifact_key("data-prep", dataset)
    create_table_artifact(
        table=prep_rows(report), key=key, description=f"Rows per table: {dataset}"
    )
    create_markdown_artifact(
        markdown=prep_markdown(dataset, report, output_uri),
        key=f"{key}-features",
        description=f"Per-feature summary: {dataset}",
    )


def emit_dataset_updated(
    dataset: str,
    output_uri: str,
    snapshot: str,
    previous: str | None,
    labelled_before: int,
    rows_in: int,
    rows_out: dict[str, int],
) -> None:
    """`mlops.dataset.updated`: a snapshot was published; retraining triggers can use
    `new_labelled_rows` as their threshold."""
    after = labelled_rows(output_uri, snapshot)
    emit_event(
        event="mlops.dataset.updated",
        resource={
            "prefect.resource.id": f"mlops.dataset.{dataset}",
            "prefect.resource.name": dataset,
        },
        related=[
            {
                "prefect.resource.id": f"mlops.dataset.{dataset}.snapshot.{snapshot}",
                "prefect.resource.role": "snapshot",
            }
        ],
        payload={
            "dataset": dataset,
            "output_uri": output_uri,
            "snapshot": snapshot,
            "previous_snapshot": previous,
            "rows_in": rows_in,
            "rows_out": rows_out,
            "labelled_rows": after,
            "new_labelled_rows": max(0, after - labelled_before),
        },
    )
