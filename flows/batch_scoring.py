"""batch-scoring: a registered version applied to entity rows, model as data -> point-in-time
features -> Dask partitions -> one Parquet file of scores, written atomically."""

from __future__ import annotations

from prefect import flow, get_run_logger
from pydantic import BaseModel, ConfigDict, Field

from blocks import DaskCluster, FeatureRepo, ModelRegistry, load_or_default, resolve_dataset
from tasks.data.publish import LABELS, absolute_uri, features_uri
from tasks.serving.batch import BatchScoringResult
from tasks.serving.prefect_tasks import batch_score_task, load_scoring_model, report_batch_scoring
from tasks.specs.datasets import default_model


class BatchScoringParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_name: str | None = Field(default=None, description="Default: the demo's model.")
    version: int | str = Field(
        default="champion", description="A version number or an alias (champion, challenger)."
    )
    entities_uri: str | None = Field(
        default=None,
        description="Entity rows (Parquet or CSV, any fsspec URI): join keys, request fields "
        "and event time. Default: data_prep's labelled rows (a backtest).",
    )
    output_uri: str | None = Field(
        default=None,
        description="The scores, one Parquet file; default data/scores/<model>-v<version>.parquet.",
    )
    timestamp_column: str | None = Field(
        default=None, description="The rows' event-time column; default: the spec's."
    )
    partitions: int | None = Field(
        default=None, ge=1, le=100_000, description="Default: one per file or 64 MB of CSV."
    )
    data_uri: str | None = Field(
        default=None, description="data_prep's output (for the default entity rows)."
    )
    dask_cluster_block: str | None = Field(default=None, description="A saved DaskCluster block.")
    feature_repo_block: str | None = None
    registry_block: str | None = None


@flow(name="batch-scoring", log_prints=True)
def batch_scoring(params: BatchScoringParams = BatchScoringParams()) -> BatchScoringResult:  # noqa: B008
    """Score entity rows with a registered version (no server) and write the scores atomically."""
    cluster = load_or_default(DaskCluster, params.dask_cluster_block, DaskCluster())
    runner = cluster.task_runner()
    return _score_on_dask.with_options(task_runner=runner)(params)  # type: ignore[arg-type]


@flow(name="batch-scoring-on-dask")
def _score_on_dask(params: BatchScoringParams) -> BatchScoringResult:
    logger = get_run_logger()
    registry = load_or_default(ModelRegistry, params.registry_block, ModelRegistry()).registry()
    name = params.model_name or default_model()
    model = load_scoring_model(registry, name, params.version)
    spec = resolve_dataset(model.metadata["dataset"])
    settings = load_or_default(FeatureRepo, params.feature_repo_block, FeatureRepo()).settings()
    entities = params.entities_uri or (
        f"{features_uri(absolute_uri(params.data_uri or f'data/{spec.name}'))}/{LABELS}"
    )
    output = params.output_uri or f"data/scores/{name}-v{model.version}.parquet"
    result = batch_score_task.submit(
        model, entities, output, spec, settings, params.timestamp_column, params.partitions
    ).result()
    report_batch_scoring(result)
    logger.info(
        "%s v%s scored %s rows of %s in %.1f s -> %s",
        name,
        model.version,
        result.rows,
        entities,
        result.seconds,
        result.output_uri,
    )
    return result
