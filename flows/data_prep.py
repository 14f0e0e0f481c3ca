"""data_prep: ingest -> validate -> Dask preprocessing -> feature tables, published atomically."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
from prefect import flow, get_run_logger
from pydantic import BaseModel, ConfigDict, Field

from blocks import (
    DaskCluster,
    DataQualityPolicy,
    DataSource,
    FeatureRepo,
    load_or_default,
    resolve_dataset,
)
from tasks.data.freshness import labelled_rows
from tasks.data.prefect_tasks import (
    build_features_task,
    check_quality_task,
    emit_dataset_updated,
    keep_quarantine_task,
    plan_sources_task,
    report_data_prep,
)
from tasks.data.publish import (
    current_snapshot,
    discard,
    explained_out_of_space,
    new_snapshot_id,
    staging_uri,
)
from tasks.feature_store.prefect_tasks import publish_task, report_skew
from tasks.specs.datasets import DEFAULT_DATASET


class DataPrepParams(BaseModel):
    """Parameters of data_prep; blocks are looked up by name, embedded defaults otherwise."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(default=DEFAULT_DATASET, description="A registered dataset spec.")
    source_uri: str | None = Field(
        default=None, description="Raw data root; default: the data source block, else the spec."
    )
    data_source_block: str | None = Field(default=None, description="A saved DataSource block.")
    output_uri: str | None = Field(default=None, description="Default: data/<dataset>.")
    dask_cluster_block: str | None = Field(default=None, description="A saved DaskCluster block.")
    dask_address: str | None = Field(
        default=None, description="tcp://host:port of a running scheduler; overrides the block."
    )
    feature_repo_block: str | None = Field(default=None, description="A saved FeatureRepo block.")
    materialize: bool = Field(default=True, description="Apply + materialize into Feast.")
    max_skew_rate: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Online/offline mismatch allowed per feature."
    )
    skew_sample: int = Field(default=200, ge=1, le=100_000, description="Entities checked.")
    quality_policy_block: str | None = Field(
        default=None, description="A saved DataQualityPolicy block (checks against the last run)."
    )
    max_reject_rate: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Share of a table's rows that may be rejected; default: the spec's limits.",
    )
    allow_empty: bool = Field(
        default=False, description="Let an empty feature table replace a non-empty one."
    )
    keep_snapshots: int = Field(
        default=3, ge=1, le=100, description="Published snapshots (and quarantine runs) kept."
    )


class DataPrepResult(BaseModel):
    dataset: str
    output_uri: str
    snapshot: str
    quality_warnings: list[str]  # checks that did not pass but only warn
    rows_in: int
    rows_rejected: int
    rows_out: dict[str, int]


@flow(name="data-prep", log_prints=True)
def data_prep(params: DataPrepParams = DataPrepParams()) -> DataPrepResult:  # noqa: B008
    """Validate a dataset's raw tables and build its feature tables on Dask."""
    cluster = load_or_default(DaskCluster, params.dask_cluster_block, DaskCluster())
    if params.dask_address:
        cluster = DaskCluster(address=params.dask_address)
    runner = cluster.task_runner()
    return _prepare_on_dask.with_options(task_runner=runner)(params)  # type: ignore[arg-type]


@flow(name="data-prep-on-dask")
def _prepare_on_dask(params: DataPrepParams) -> DataPrepResult:
    logger = get_run_logger()
    spec = resolve_dataset(params.dataset)
    default_source = DataSource(uri=spec.source.uri, format=spec.source.format)
    source = load_or_default(DataSource, params.data_source_block, default_source)
    if source.format != spec.source.format:
        spec = spec.model_copy(
            update={"source": spec.source.model_copy(update={"format": source.format})}
        )
    source_uri = params.source_uri or source.uri
    access = source.access()  # storage options and secret, for every read of the source
    output_uri = params.output_uri or f"data/{spec.name}"
    started = datetime.now(UTC)
    now = pd.Timestamp(started)

    plan = plan_sources_task.submit(spec, source_uri, access).result()
    snapshot = new_snapshot_id(started)
    staging = staging_uri(output_uri, snapshot)
    policy = load_or_default(DataQualityPolicy, params.quality_policy_block, DataQualityPolicy())
    with explained_out_of_space(output_uri, snapshot):  # a full disk: one clear error
        try:
            report = build_features_task.submit(spec, plan, staging, now, access).result()
            keep_quarantine_task(staging, output_uri, snapshot)  # kept whatever the checks say
            report_data_prep(spec.name, report, output_uri)
            checks = check_quality_task(
                spec,
                report,
                staging,
                output_uri,
                policy.policy,
                params.allow_empty,
                params.max_reject_rate,
            )
        except BaseException:
            discard(staging)
            raise
        repo = load_or_default(FeatureRepo, params.feature_repo_block, FeatureRepo())
        previous = current_snapshot(output_uri)
        labelled_before = labelled_rows(output_uri, previous)  # publishing may prune it
        skew = publish_task(
            spec,
            staging,
            output_uri,
            snapshot,
            repo.settings() if params.materialize else None,
            started,
            params.max_skew_rate,
            params.skew_sample,
            params.keep_snapshots,
        )
    warnings = [
        f"{c.table}{'.' + c.feature if c.feature else ''} {c.check}: {c.detail}"
        for c in checks
        if not c.passed
    ]
    for warning in warnings:
        logger.warning("data-quality warning: %s", warning)
    if skew is not None:
        report_skew(spec.name, skew)
    logger.info(
        "data_prep %s: %s rows in, %s rejected; published snapshot %s under %s",
        spec.name,
        report.rows_in,
        report.rows_rejected,
        snapshot,
        output_uri,
    )
    rows_out = {name: int(stats["rows"].iloc[0]) for name, stats in report.features.items()}
    emit_dataset_updated(
        spec.name, output_uri, snapshot, previous, labelled_before, report.rows_in, rows_out
    )
    return DataPrepResult(
        dataset=spec.name,
        output_uri=output_uri,
        snapshot=snapshot,
        quality_warnings=warnings,
        rows_in=report.rows_in,
        rows_rejected=report.rows_rejected,
        rows_out=rows_out,
    )
