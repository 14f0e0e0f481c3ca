"""training: Feast point-in-time training set -> time split -> train -> register the candidate."""

from __future__ import annotations

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from blocks import FeatureRepo, ModelRegistry, load_or_default, resolve_dataset
from tasks.artifacts import artifact_key
from tasks.registry.candidate import data_summary, register_candidate_task
from tasks.specs.dataset_spec import DatasetSpec, monotone
from tasks.specs.datasets import DEFAULT_DATASET, model_name
from tasks.feature_store.store import fingerprint, labelled_set, open_store, service_features
from tasks.training.lightgbm_trainer import LightGBMParams, binary_metrics
from tasks.training.torch_trainer import TorchParams
from tasks.training.trainers import Trainer, TrainingInputs, fit_task
from tasks.training.training_set import check_training_set, time_split


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
    reference_rows: int = Field(default=5_000, ge=100, le=1_000_000)
    data_uri: str | None = Field(default=None, description="data_prep's output; data/<dataset>.")
    feature_repo_block: str | None = None
    registry_block: str | None = None


class TrainingResult(BaseModel):
    model: str
    version: int
    metrics: dict[str, float]


@task(name="load-training-set", cache_policy=NO_CACHE)
def load_training_set(
    spec: DatasetSpec, params: TrainingParams, service: str
) -> tuple[pd.DataFrame, list[str], list[str], str]:
    labels = pd.read_parquet(f"{params.data_uri or f'data/{spec.name}'}/features/labels")
    store = open_store(
        load_or_default(FeatureRepo, params.feature_repo_block, FeatureRepo()).settings()
    )
    features, categorical = service_features(store, spec, service)
    frame = labelled_set(store, spec, labels, service)
    return frame, features, categorical, fingerprint(store, service)


@flow(name="training", log_prints=True)
def training(params: TrainingParams = TrainingParams()) -> TrainingResult:  # noqa: B008
    """Train a model on a feature service's training set and register it as a candidate."""
    logger = get_run_logger()
    spec = resolve_dataset(params.dataset)
    service = params.feature_service or next(iter(spec.feature_services))
    if service not in spec.feature_services:
        raise ValueError(f"feature_service '{service}' is not one of {list(spec.feature_services)}")
    name = params.model_name or model_name(service)
    frame, features, categorical, feature_fp = load_training_set(spec, params, service)
    label = spec.label.column
    check_training_set(frame, features, label)
    split = time_split(frame, spec.timestamp_field, params.valid_share, params.test_share)

    trainer_params: BaseModel = getattr(params, params.trainer)  # fields named as the trainers
    inputs = TrainingInputs(split, features, categorical, label, params.seed, monotone(spec))
    fitted = fit_task(params.trainer, inputs, trainer_params)
    test_scores = fitted.predict(split.test)
    metrics = {
        **fitted.metrics,
        **binary_metrics(split.test[label].to_numpy(), test_scores, "test_"),
    }
    reference = split.train.sample(
        min(params.reference_rows, len(split.train)), random_state=params.seed
    )
    registry = load_or_default(ModelRegistry, params.registry_block, ModelRegistry()).registry()
    version = register_candidate_task(
        registry,
        name,
        fitted.files,
        reference,
        features,
        {
            "dataset": spec.name,
            "feature_service": service,
            "feature_fingerprint": feature_fp,
            "trainer": params.trainer,
            "params": trainer_params.model_dump(),
            "seed": params.seed,
            **fitted.details,
            "categorical": categorical,
            "label": spec.label.column,
            "metrics": metrics,
            "data": {
                part: data_summary(getattr(split, part), spec.timestamp_field)
                for part in ("train", "valid", "test")
            },
        },
        label,
    )
    create_markdown_artifact(
        key=artifact_key("candidate", name),
        markdown=f"# {name} v{version.version}\n\n"
        + "\n".join(f"- {k}: {v:.4f}" for k, v in metrics.items()),
        description=f"Training candidate {name} v{version.version}",
    )
    logger.info("registered %s v%s: test AUC %.4f", name, version.version, metrics["test_auc"])
    return TrainingResult(model=name, version=version.version, metrics=metrics)
