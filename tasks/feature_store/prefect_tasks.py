"""The feature store's Prefect tasks: thin wrappers adding names, timeouts and artifacts.

Publishing (seal, apply, materialize, skew check, both pointers) is not retried even on a
transient I/O error: a failed try leaves the previous state whole and removes the unpublished
snapshot, so the flow runs again from the build.
"""

from __future__ import annotations

from datetime import datetime

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from tasks.artifacts import artifact_key
from tasks.feature_store.report import skew_rows
from tasks.feature_store.skew import SkewReport
from tasks.feature_store.store import StoreSettings
from tasks.feature_store.sync import publish_run
from tasks.specs.dataset_spec import DatasetSpec


@task(name="publish-snapshot", cache_policy=NO_CACHE, timeout_seconds=4 * 3_600)
def publish_task(
    spec: DatasetSpec,
    staging: str,
    output_uri: str,
    snapshot: str,
    settings: StoreSettings | None,
    now: datetime,
    max_skew_rate: float,
    sample: int,
    keep: int,
) -> dict[str, SkewReport] | None:
    return publish_run(
        spec, staging, output_uri, snapshot, settings, now, max_skew_rate, sample, keep
    )


@task(name="report-skew")
def report_skew(dataset: str, reports: dict[str, SkewReport]) -> None:
    create_table_artifact(
        table=skew_rows(reports),
        key=artifact_key("feature-skew", dataset),
        description=f"Online vs offline features as of now, per feature: {dataset}",
    )
