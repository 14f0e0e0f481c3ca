"""The feature store's Prefect tasks: thin wrappers adding names, retries, timeouts, artifacts.

Syncing (apply, materialize, skew check) reads and writes Feast's registry and online store;
a transient failure (a locked SQLite file, a dropped Redis or object-store connection) is worth
one more try, and the sync is idempotent: apply replaces definitions, materialization rewrites
the same window. A skew failure is not transient and is not retried.
"""

from __future__ import annotations

from datetime import datetime

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from tasks.artifacts import artifact_key
from tasks.feature_store.report import skew_rows
from tasks.feature_store.skew import SkewReport, sync_feature_store
from tasks.feature_store.store import StoreSettings
from tasks.retries import retry_transient
from tasks.specs.dataset_spec import DatasetSpec


@task(
    name="sync-feature-store",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=[5, 30],
    retry_condition_fn=retry_transient,
    timeout_seconds=4 * 3_600,
)
def sync_feature_store_task(
    spec: DatasetSpec,
    settings: StoreSettings,
    features_uri: str,
    now: datetime,
    max_skew_rate: float,
    sample: int,
) -> dict[str, SkewReport]:
    return sync_feature_store(spec, settings, features_uri, now, max_skew_rate, sample)


@task(name="report-skew")
def report_skew(dataset: str, reports: dict[str, SkewReport]) -> None:
    create_table_artifact(
        table=skew_rows(reports),
        key=artifact_key("feature-skew", dataset),
        description=f"Online vs offline features as of now, per feature: {dataset}",
    )
