from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from features.credit_risk.generator import generate_demo
from tasks.specs.dataset_spec import DatasetSpec, GenerateOptions
from tasks.specs.datasets import get_dataset

NOW = pd.Timestamp("2026-11-29", tz="UTC")


@pytest.fixture(scope="session")
def credit_spec() -> DatasetSpec:
    return get_dataset("credit_risk")


@pytest.fixture(scope="session")
def tiny_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5k transactions in 5 files per table, with 1% defective rows; read-only for tests."""
    root = tmp_path_factory.mktemp("raw") / "credit_risk"
    generate_demo(str(root), GenerateOptions(rows=5_000, seed=7, chunk_rows=1_000, dirty_rate=0.01))
    return root


@pytest.fixture(scope="session")
def tiny_features(tiny_raw: Path, credit_spec: DatasetSpec, tmp_path_factory) -> Path:
    """data_prep's output for `tiny_raw` (features/ and quarantine/), built once."""
    import dask

    from tasks.data.preprocess import build_features, plan_sources

    out = tmp_path_factory.mktemp("prepared")
    with dask.config.set(scheduler="sync"):
        build_features(credit_spec, plan_sources(credit_spec, str(tiny_raw)), str(out), NOW)
    return out / "features"
