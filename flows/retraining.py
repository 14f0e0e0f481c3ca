"""retraining: the loop. An event (drift, degraded accuracy, new data, a new pipeline) ->
data_prep when there is new data -> training -> validation -> deployment (canary analysis, then
promote or roll back), as subflows; the new version records its cause and its lineage."""

from __future__ import annotations

import json
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from pydantic import BaseModel, ConfigDict, Field

from blocks import DataSource, ModelRegistry, load_or_default, loop_settings, resolve_dataset
from flows.data_prep import DataPrepParams, data_prep
from flows.deployment import DeploymentParams, deployment
from flows.training import TrainingParams, training
from flows.validation import ValidationParams, validation
from tasks.data.freshness import newer_source_files
from tasks.data.publish import current_snapshot
from tasks.monitoring.lineage import FILE, RECORD, models_for
from tasks.registry.store import ModelVersion, Registry, RegistryError

DataPrep = Literal["auto", "always", "never"]
PIPELINE_UPDATED = "mlops.pipeline.updated"  # new code, the same data: retrained all the same


class RetrainingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_name: str | None = Field(
        default=None, description="The model to retrain; default: the event's resource."
    )
    resource_id: str | None = Field(
        default=None,
        description="The triggering event's resource: mlops.model.<name>, "
        "mlops.dataset.<name> (every model trained on it) or mlops.pipeline.<flow> (every "
        "model with a champion).",
    )
    event_id: str | None = Field(default=None, description="The triggering event's id.")
    event_name: str | None = Field(default=None, description="The triggering event's name.")
    payload: dict[str, Any] = Field(default_factory=dict, description="The event's payload.")
    data_prep: DataPrep = Field(
        default="auto",
        description="auto: run data_prep when the source has files newer than the published "
        "snapshot (never after mlops.dataset.updated, which data_prep itself emitted).",
    )
    min_new_labelled_rows: int = Field(
        default=0,
        ge=0,
        description="After mlops.dataset.updated: retrain only when the new snapshot brought at "
        "least this many new labelled rows.",
    )
    deploy: bool = Field(default=True, description="Canary the validated version.")
    # blocks: default, the `mlops_loop` variable's (blocks/loop_settings.py), else embedded
    registry_block: str | None = None
    target_block: str | None = None
    rollout_policy_block: str | None = None
    validation_policy_block: str | None = None
    data_source_block: str | None = None
    dask_cluster_block: str | None = None


class RetrainingResult(BaseModel):
    model: str
    version: int
    data_prep: str  # the snapshot published, or why none ran
    validation: str
    deployment: str | None
    lineage_record: str


def _recipe(base: ModelVersion) -> dict[str, Any]:
    """The training parameters the base version was made with (rebuilt for older versions)."""
    md = base.metadata
    if "training_params" in md:
        return dict(md["training_params"])
    return {
        k: v
        for k, v in {
            "dataset": md.get("dataset"),
            "feature_service": md.get("feature_service"),
            "trainer": md.get("trainer"),
            md.get("trainer", "lightgbm"): md.get("params"),
            "seed": md.get("seed"),
        }.items()
        if v is not None
    }


def _why(params: RetrainingParams) -> str:
    p = params.payload
    if p.get("drifted_features"):
        return "drifted: " + ", ".join(p["drifted_features"])
    if "score_p_value" in p:
        return f"prediction drift, score KS p={p['score_p_value']:.3g}"
    if "metric" in p:
        return f"live {p['metric']} {p.get('value'):.4f} below {p.get('floor')}"
    if "new_labelled_rows" in p:
        return f"{p['new_labelled_rows']} new labelled rows (snapshot {p.get('snapshot')})"
    if "commit" in p:
        return f"pipeline updated at {p['commit']}"
    return "asked by hand" if not params.event_name else params.event_name


@flow(name="retraining", log_prints=True)
def retraining(params: RetrainingParams = RetrainingParams()) -> list[RetrainingResult]:  # noqa: B008
    """Retrain, gate and roll out the model(s) an event is about; each step a subflow."""
    loop = loop_settings()
    params = params.model_copy(
        update={
            field: getattr(params, field) or getattr(loop, field)
            for field in (
                "registry_block",
                "target_block",
                "rollout_policy_block",
                "validation_policy_block",
                "data_source_block",
                "dask_cluster_block",
            )
        }
    )
    registry = load_or_default(ModelRegistry, params.registry_block, ModelRegistry()).registry()
    new_rows = params.payload.get("new_labelled_rows")
    if new_rows is not None and int(new_rows) < params.min_new_labelled_rows:
        get_run_logger().info(
            "not retraining: %s new labelled row(s), fewer than %s",
            new_rows,
            params.min_new_labelled_rows,
        )
        return []
    if params.model_name:
        names = models_for(registry, f"mlops.model.{params.model_name}")
    elif params.resource_id:
        names = models_for(registry, params.resource_id)
    else:
        raise ValueError("retraining needs model_name or the triggering event's resource_id")
    done = [_retrain(name, params, registry, loop.feature_repo_block) for name in names]
    return [d for d in done if d is not None]


def _retrain(
    name: str, params: RetrainingParams, registry: Registry, feature_repo_block: str | None
) -> RetrainingResult | None:
    logger = get_run_logger()
    aliases = registry.aliases(name)
    base = registry.get(
        name, "champion" if "champion" in aliases else registry.versions(name)[-1].version
    )
    recipe = _recipe(base)
    spec = resolve_dataset(recipe.get("dataset") or base.metadata["dataset"])
    data_uri = recipe.get("data_uri") or f"data/{spec.name}"
    repo_block = feature_repo_block or recipe.get("feature_repo_block")
    cause = {
        "event": params.event_name,
        "event_id": params.event_id,
        "resource": params.resource_id or f"mlops.model.{name}",
        "record": params.payload.get("record"),
        "why": _why(params),
        "retraining_run": flow_run.get_id(),
        "base_version": base.version,
    }
    runs: dict[str, str | None] = {"retraining": flow_run.get_id()}
    logger.info("retraining %s from v%s: %s", name, base.version, cause["why"])

    prep_note = _maybe_data_prep(params, spec, data_uri, repo_block, runs)
    snapshot = current_snapshot(data_uri)
    same_data = runs["data-prep"] is None and snapshot == base.metadata.get("data_snapshot")
    if same_data and snapshot and params.event_name != PIPELINE_UPDATED:
        # the same recipe on the same data gives the same model back: nothing to retrain on
        # (the episode stays open, and is emitted again until new data arrives)
        logger.warning(
            "not retraining %s: no new data since v%s (snapshot %s; %s)",
            name,
            base.version,
            snapshot,
            prep_note,
        )
        return None
    trained_state = training(
        TrainingParams.model_validate(
            {
                **recipe,
                "model_name": name,
                "data_uri": data_uri,
                "feature_repo_block": repo_block,
                "registry_block": params.registry_block,
                "cause": cause,
            }
        ),
        return_state=True,
    )
    runs["training"] = str(trained_state.state_details.flow_run_id)
    trained = trained_state.result()
    lineage: dict[str, Any] = {
        "model": name,
        "version": trained.version,
        "cause": cause,
        "runs": runs,
        "data_prep": prep_note,
        "validation": None,
        "deployment": None,
    }
    try:  # the version exists now: its lineage is recorded however the rest ends
        validated_state = validation(
            ValidationParams(
                model_name=name,
                candidate=trained.version,
                policy_block=params.validation_policy_block,
                data_uri=data_uri,
                feature_repo_block=repo_block,
                registry_block=params.registry_block,
            ),
            return_state=True,
        )
        runs["validation"] = str(validated_state.state_details.flow_run_id)
        validated = validated_state.result()
        lineage["validation"] = {
            "decision": validated.decision,
            "failed_gates": validated.failed_gates,
            "record": validated.record,
        }
        rollout = None
        if validated.decision == "challenger" and params.deploy:
            deployed_state = deployment(
                DeploymentParams(
                    model_name=name,
                    action="rollout",
                    version=trained.version,
                    reason=f"retraining: {cause['why']}",
                    actor=f"retraining {flow_run.get_id()} ({params.event_name or 'by hand'})",
                    target_block=params.target_block,
                    policy_block=params.rollout_policy_block,
                    registry_block=params.registry_block,
                ),
                return_state=True,
            )
            runs["deployment"] = str(deployed_state.state_details.flow_run_id)
            rollout = deployed_state.result()
            lineage["deployment"] = rollout.model_dump(mode="json")
    except BaseException as exc:
        lineage["error"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        stamp = registry.record(name, trained.version, RECORD, {FILE: json.dumps(lineage).encode()})
    logger.info(
        "%s v%s: %s%s",
        name,
        trained.version,
        validated.decision,
        f", rollout {rollout.decision}" if rollout else "",
    )
    return RetrainingResult(
        model=name,
        version=trained.version,
        data_prep=prep_note,
        validation=validated.decision,
        deployment=rollout.decision if rollout else None,
        lineage_record=stamp,
    )


def _maybe_data_prep(
    params: RetrainingParams,
    spec: Any,
    data_uri: str,
    repo_block: str | None,
    runs: dict[str, str | None],
) -> str:
    if params.data_prep == "never" or params.event_name == "mlops.dataset.updated":
        runs["data-prep"] = None
        return "skipped: " + ("asked" if params.data_prep == "never" else "data_prep just ran")
    source = load_or_default(
        DataSource,
        params.data_source_block,
        DataSource(uri=spec.source.uri, format=spec.source.format),
    )
    rebuilt = params.event_name == PIPELINE_UPDATED and "data-prep" in params.payload.get(
        "pipelines", []
    )
    if params.data_prep == "auto" and not rebuilt:  # new data_prep code: features made again
        newer = newer_source_files(source.uri, data_uri, source.access().fsspec_options())
        if not newer:
            runs["data-prep"] = None
            return "skipped: no source file newer than the published snapshot"
    state = data_prep(
        DataPrepParams(
            dataset=spec.name,
            data_source_block=params.data_source_block,
            output_uri=data_uri,
            dask_cluster_block=params.dask_cluster_block,
            feature_repo_block=repo_block,
        ),
        return_state=True,
    )
    runs["data-prep"] = str(state.state_details.flow_run_id)
    return f"snapshot {state.result().snapshot}"


__all__ = ["RegistryError", "RetrainingParams", "RetrainingResult", "retraining"]
