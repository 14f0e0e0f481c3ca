"""A trained model as a registry version: its files and everything needed to reproduce it."""

from __future__ import annotations

import importlib.metadata
import io
import json
import subprocess
from typing import Any

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.registry.loading import REFERENCE
from tasks.registry.store import ModelVersion, Registry

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


def register_candidate(
    registry: Registry,
    name: str,
    model_files: dict[str, bytes],
    reference: pd.DataFrame,
    features: list[str],
    metadata: dict[str, Any],
    label: str,
) -> ModelVersion:
    """Register model files + a reference sample of training rows (features, label) + metadata."""
    buffer = io.BytesIO()
    reference[[*features, label]].to_parquet(buffer, index=False)
    files = {
        **model_files,
        REFERENCE: buffer.getvalue(),
        "features.json": json.dumps({"features": features}).encode(),
    }
    full = {**metadata, "git_sha": git_sha(), "packages": package_versions()}
    return registry.register(name, files, full)


register_candidate_task = task(name="register-candidate", cache_policy=NO_CACHE)(register_candidate)
