"""The flow registry: name -> flow, a one-line summary and its parameter model.

`prefect.yaml` declares one deployment per entry (a test holds them to the same set).
"""

from __future__ import annotations

from dataclasses import dataclass

from prefect import Flow
from pydantic import BaseModel

from flows.batch_scoring import BatchScoringParams, batch_scoring
from flows.data_prep import DataPrepParams, data_prep
from flows.deployment import DeploymentParams, deployment
from flows.generate_data import GenerateDataParams, generate_data
from flows.monitoring import MonitoringParams, monitoring
from flows.retraining import RetrainingParams, retraining
from flows.training import TrainingParams, training
from flows.validation import ValidationParams, validation


@dataclass(frozen=True)
class RegisteredFlow:
    flow: Flow
    summary: str
    params: type[BaseModel]
    entrypoint: str


FLOWS: dict[str, RegisteredFlow] = {
    "generate-data": RegisteredFlow(
        generate_data,
        "Generate a dataset's synthetic raw tables, optionally with covariate or concept drift.",
        GenerateDataParams,
        "flows/generate_data.py:generate_data",
    ),
    "data-prep": RegisteredFlow(
        data_prep,
        "Validate raw tables, quarantine bad rows, build feature tables on Dask, publish them.",
        DataPrepParams,
        "flows/data_prep.py:data_prep",
    ),
    "training": RegisteredFlow(
        training,
        "Train on a feature service's point-in-time training set; register the candidate version.",
        TrainingParams,
        "flows/training.py:training",
    ),
    "validation": RegisteredFlow(
        validation,
        "Gate a candidate against the champion on a time-later test set; challenger or reject.",
        ValidationParams,
        "flows/validation.py:validation",
    ),
    "deployment": RegisteredFlow(
        deployment,
        "Serve the champion; canary or shadow the challenger, then promote or roll back.",
        DeploymentParams,
        "flows/deployment.py:deployment",
    ),
    "batch-scoring": RegisteredFlow(
        batch_scoring,
        "Score entity rows with a registered version (no server): point-in-time features, Dask.",
        BatchScoringParams,
        "flows/batch_scoring.py:batch_scoring",
    ),
    "monitoring": RegisteredFlow(
        monitoring,
        "Drift detectors on served traffic since the watermark, live accuracy from late labels; "
        "records, metrics and drift/degradation events.",
        MonitoringParams,
        "flows/monitoring.py:monitoring",
    ),
    "retraining": RegisteredFlow(
        retraining,
        "The loop, started by an event: data_prep if new data, training, validation, then "
        "canary and promote or roll back; lineage back to the event.",
        RetrainingParams,
        "flows/retraining.py:retraining",
    ),
}
