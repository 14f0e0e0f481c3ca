"""The training stage's Prefect tasks: thin wrappers adding names, retries and timeouts.

Loading the training set reads Feast's registry and the offline store, where a transient I/O
failure is worth another try. Splitting and calibrating are pure and fitting fails the same way
on the same data, so none is retried; fitting has a timeout instead (a hung collective in
horovodrun). Registering is not retried: a version is claimed once, and a second try would
claim another.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from tasks.artifacts import artifact_key
from tasks.feature_store.store import StoreSettings
from tasks.registry.store import ModelVersion, Registry
from tasks.retries import retry_transient
from tasks.specs.dataset_spec import DatasetSpec
from tasks.training.calibration import Calibration, calibrate
from tasks.training.candidate import calibration_summary, register_candidate
from tasks.training.trainers import Fitted, Trainer, TrainingInputs, fit
from tasks.training.training_set import (
    LabelledSet,
    Split,
    load_labelled_set,
    split_labelled_set,
)


@task(
    name="load-training-set",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=[5, 30],
    retry_condition_fn=retry_transient,
    timeout_seconds=2 * 3_600,
)
def load_training_set(
    spec: DatasetSpec, data_uri: str, settings: StoreSettings, service: str
) -> LabelledSet:
    return load_labelled_set(spec, data_uri, settings, service)


@task(name="split-training-set", cache_policy=NO_CACHE)
def split_training_set(
    data: LabelledSet,
    spec: DatasetSpec,
    valid_share: float,
    test_share: float,
    embargo_days: float | None,
) -> Split:
    return split_labelled_set(data, spec, valid_share, test_share, embargo_days)


@task(
    name="train", cache_policy=NO_CACHE, task_run_name="train-{trainer}", timeout_seconds=12 * 3_600
)
def fit_task(trainer: Trainer, inputs: TrainingInputs, params: BaseModel) -> Fitted:
    return fit(trainer, inputs, params)


@task(name="calibrate", cache_policy=NO_CACHE, task_run_name="calibrate-{method}")
def calibrate_task(fitted: Fitted, valid: pd.DataFrame, label: str, method: Calibration) -> Fitted:
    return calibrate(fitted, valid, label, method)


@task(name="register-candidate", cache_policy=NO_CACHE)
def register_candidate_task(
    registry: Registry,
    name: str,
    spec: DatasetSpec,
    service: str,
    data: LabelledSet,
    split: Split,
    fitted: Fitted,
    training: dict[str, Any],
    reference_rows: int,
    seed: int,
) -> ModelVersion:
    version = register_candidate(
        registry, name, spec, service, data, split, fitted, training, reference_rows, seed
    )
    metrics = version.metadata["metrics"]
    create_markdown_artifact(
        key=artifact_key("candidate", name),
        markdown=f"# {name} v{version.version}\n\n{calibration_summary(version.metadata)}\n\n"
        + "\n".join(f"- {k}: {v:.4f}" for k, v in metrics.items()),
        description=f"Training candidate {name} v{version.version}",
    )
    return version
