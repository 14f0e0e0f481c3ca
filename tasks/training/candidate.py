"""A fitted model as a candidate version in the registry: its files, a reference sample of
training rows, test metrics, and everything needed to reproduce it."""

from __future__ import annotations

import importlib.metadata
import io
import json
import subprocess
from typing import Any

import pandas as pd

from deployments.contract import HOLDOUT, SERVING
from deployments.predictor import FEATURES, REFERENCE
from tasks.monitoring.detectors import drift_features, fit_detector_files
from tasks.registry.store import ModelVersion, Registry
from tasks.serving.contract import HOLDOUT_ROWS, holdout_sample, serving_contract
from tasks.specs.dataset_spec import DatasetSpec
from tasks.training.onnx_export import ONNX, export_onnx
from tasks.training.trainers import Fitted
from tasks.training.training_set import LabelledSet, Split
from tasks.validation.metrics import binary_metrics

PACKAGES = ("lightgbm", "torch", "pandas", "numpy", "scikit-learn", "feast", "prefect", "dask")


def git_sha() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def data_summary(frame: pd.DataFrame, timestamp: str) -> dict[str, Any]:
    return {
        "rows": len(frame),
        "from": frame[timestamp].min().isoformat(),
        "to": frame[timestamp].max().isoformat(),
    }


def calibration_summary(metadata: dict[str, Any]) -> str:
    """A line on a version's calibration: the method and the test ECE before/after."""
    info, metrics = metadata.get("calibration") or {"method": "none"}, metadata["metrics"]
    if info["method"] == "none":
        return "Calibration: none (the model's own scores)."
    return (
        f"Calibration: {info['method']}, fitted on {info['valid_rows']} validation rows; test ECE "
        f"{metrics['test_uncalibrated_ece']:.4f} uncalibrated -> {metrics['test_ece']:.4f} "
        f"calibrated (log loss {metrics['test_uncalibrated_logloss']:.4f} -> "
        f"{metrics['test_logloss']:.4f})."
    )


def register_candidate(
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
    """Score the test split, then register the model files, a reference sample of training rows
    (features and label), drift detectors fitted on it, and metadata; `training` holds the
    trainer's name and parameters (and, for a retraining, its cause).

    test_* are the metrics of the scores a loaded version predicts (calibrated, if `fitted` is),
    test_uncalibrated_* those of the model's own scores: the test split fitted neither.
    """
    label = spec.label.column
    labels = split.test[label].to_numpy()
    test_scores = fitted.predict(split.test)
    metrics = {**fitted.metrics, **binary_metrics(labels, test_scores, "test_")}
    if fitted.uncalibrated is not None:
        raw = binary_metrics(labels, fitted.uncalibrated(split.test), "test_uncalibrated_")
        metrics.update({k: v for k, v in raw.items() if not k.endswith("positive_rate")})
    reference = split.train.sample(min(reference_rows, len(split.train)), random_state=seed)
    buffer = io.BytesIO()
    reference[[*data.features, label]].to_parquet(buffer, index=False)
    files = {
        **fitted.files,
        REFERENCE: buffer.getvalue(),
        FEATURES: json.dumps({"features": data.features}).encode(),
        ONNX: export_onnx(training["trainer"], fitted.files, data.features),
        SERVING: serving_contract(
            spec,
            service,
            data.features,
            data.stored_views,
            data.frame,
            data.fingerprint,
            data.project,
        )
        .to_json()
        .encode(),
        HOLDOUT: holdout_sample(split.test, data.features, test_scores, HOLDOUT_ROWS, seed),
        **fit_detector_files(
            reference,
            test_scores,  # out of sample, as served scores are (in-sample ones are sharper)
            drift_features(spec.monitoring.drift_features, data.features),
            data.categorical,
        ),
    }
    metadata = {
        "dataset": spec.name,
        "feature_service": service,
        "feature_fingerprint": data.fingerprint,
        "feature_views": data.view_digests,
        "data_snapshot": data.snapshot,
        **training,
        "seed": seed,
        **fitted.details,
        "categorical": data.categorical,
        "label": label,
        "metrics": metrics,
        "data": {
            part: data_summary(getattr(split, part), spec.timestamp_field)
            for part in ("train", "valid", "test")
        },
        "split": split.cuts,
        "git_sha": git_sha(),
        "packages": package_versions(),
    }
    return registry.register(name, files, metadata)
