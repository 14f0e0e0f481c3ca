"""training: Feast point-in-time training set -> time split -> train -> calibrate -> register the
candidate."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from pydantic import BaseModel, ConfigDict, Field

from blocks import FeatureRepo, ModelRegistry, load_or_default, resolve_dataset
from tasks.specs.dataset_spec import SpecError, monotone
from tasks.specs.datasets import DEFAULT_DATASET, model_name
from tasks.training.calibration import Calibration
from tasks.training.lightgbm_trainer import LightGBMParams
from tasks.training.prefect_tasks import (
    calibrate_task,
    fit_task,
    load_training_set,
    register_candidate_task,
    split_training_set,
)
from tasks.training.torch_trainer import TorchParams
from tasks.training.trainers import Trainer, TrainingInputs


class TrainingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(default=DEFAULT_DATASET, description="A dataset spec or its block.")
    feature_service: str | None = Field(default=None, description="Default: the spec's first.")
    model_name: str | None = Field(default=None, description="Default: the feature service's.")
    trainer: Trainer = "lightgbm"
    lightgbm: LightGBMParams = Field(default_factory=LightGBMParams)
    torch: TorchParams = Field(default_factory=TorchParams)
    seed: int = Field(default=0, ge=0)
    valid_share: float = Field(default=0.15, gt=0.0, lt=0.5)
    test_share: float = Field(default=0.15, gt=0.0, lt=0.5)
    embargo_days: float | None = Field(
        default=None,
        ge=0.0,
        le=3650.0,
        description="Time left out before the valid and test cuts; default and minimum: the "
        "label's horizon.",
    )
    calibration: Calibration = Field(
        default="platt",
        description="Map the scores to probabilities, fitted on the validation split and stored "
        "with the version. platt: two parameters, keeps the ranking, enough for a few hundred "
        "rows; isotonic: a step function, needs thousands; none: the model's own scores.",
    )
    reference_rows: int = Field(default=5_000, ge=100, le=1_000_000)
    data_uri: str | None = Field(default=None, description="data_prep's output; data/<dataset>.")
    feature_repo_block: str | None = None
    registry_block: str | None = None
    cause: dict[str, Any] | None = Field(
        default=None,
        description="Why this training runs (set by retraining: the event, its record, the run); "
        "kept in the version's metadata.",
    )


class TrainingResult(BaseModel):
    model: str
    version: int
    metrics: dict[str, float]


@flow(name="training", log_prints=True)
def training(params: TrainingParams = TrainingParams()) -> TrainingResult:  # noqa: B008
    """Train a model on a feature service's training set and register it as a candidate."""
    logger = get_run_logger()
    spec = resolve_dataset(params.dataset)
    service = params.feature_service or next(iter(spec.feature_services))
    if service not in spec.feature_services:
        raise SpecError(
            f"dataset '{spec.name}': feature_service '{service}' is not one of "
            f"{list(spec.feature_services)}"
        )
    name = params.model_name or model_name(service)
    settings = load_or_default(FeatureRepo, params.feature_repo_block, FeatureRepo()).settings()
    data = load_training_set(spec, params.data_uri or f"data/{spec.name}", settings, service)
    split = split_training_set(
        data, spec, params.valid_share, params.test_share, params.embargo_days
    )

    trainer_params: BaseModel = getattr(params, params.trainer)  # fields named as the trainers
    inputs = TrainingInputs(
        split, data.features, data.categorical, spec.label.column, params.seed, monotone(spec)
    )
    fitted = fit_task(params.trainer, inputs, trainer_params)
    fitted = calibrate_task(fitted, split.valid, spec.label.column, params.calibration)
    registry = load_or_default(ModelRegistry, params.registry_block, ModelRegistry()).registry()
    training_info = {
        "trainer": params.trainer,
        "params": trainer_params.model_dump(),
        # the whole recipe, so that a retraining repeats it on newer data
        "training_params": params.model_dump(mode="json", exclude={"cause"}),
        "cause": params.cause,
        "flow_run": flow_run.get_id(),
    }
    version = register_candidate_task(
        registry,
        name,
        spec,
        service,
        data,
        split,
        fitted,
        training_info,
        params.reference_rows,
        params.seed,
    )
    metrics = version.metadata["metrics"]
    logger.info("registered %s v%s: test AUC %.4f", name, version.version, metrics["test_auc"])
    return TrainingResult(model=name, version=version.version, metrics=metrics)
