"""A registered version's drift detectors: stored with it, or fitted on first use.

Versions registered before detectors existed have their reference sample, so their detectors
are fitted from it the first time monitoring needs them and kept as a `detectors` record
beside the version (its own files never change); later runs load that record.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from deployments.contract import HOLDOUT
from deployments.predictor import REFERENCE
from tasks.monitoring.detectors import (
    Detectors,
    drift_features,
    fit_detector_files,
    has_detectors,
    load_detectors,
    read_files,
)
from tasks.registry.loading import load_model
from tasks.registry.store import Registry
from tasks.serving.contract import SCORE
from tasks.specs.dataset_spec import SpecError
from tasks.specs.datasets import get_dataset

RECORD = "detectors"


def version_detectors(registry: Registry, name: str, version: int) -> Detectors:
    info = registry.get(name, version)
    where = f"model '{name}' v{version}"
    if has_detectors(info.files):
        return load_detectors(lambda f: registry.read(name, version, f), where=where)
    stamps = registry.records(name, version, RECORD)
    if stamps:
        return load_detectors(
            lambda f: registry.read_record(name, version, RECORD, stamps[-1], f),
            origin=f"fitted on first use (record {stamps[-1]})",
            where=f"{where} {RECORD} record {stamps[-1]}",
        )
    if REFERENCE not in info.files:
        raise ValueError(
            f"model '{name}' version {version} has no detectors and no {REFERENCE} to fit them "
            "on: it cannot be monitored; register a new version"
        )
    reference = pd.read_parquet(io.BytesIO(registry.read(name, version, REFERENCE)))
    model = load_model(registry, name, version)
    if HOLDOUT in info.files:  # out-of-sample scores, as at registration
        holdout = pd.read_parquet(io.BytesIO(registry.read(name, version, HOLDOUT)))
        scores = holdout[SCORE].to_numpy("float64")
    else:
        scores = np.asarray(model.predict(reference), dtype="float64")
    try:
        watched = get_dataset(str(info.metadata.get("dataset"))).monitoring.drift_features
    except (SpecError, KeyError, FileNotFoundError):
        watched = []  # a dataset no longer registered: watch every feature
    files = fit_detector_files(
        reference,
        scores,
        drift_features(watched, model.features),
        info.metadata.get("categorical", []),
    )
    stamp = registry.record(name, version, RECORD, files)
    return load_detectors(read_files(files), origin=f"fitted on first use (record {stamp})")
