"""The second dataset through the whole chain: data_prep -> Feast -> training -> validation."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from blocks import ModelRegistry
from flows.data_prep import DataPrepParams, data_prep
from flows.generate_data import GenerateDataParams, generate_data
from flows.training import TrainingParams, training
from flows.validation import ValidationParams, validation
from tasks.validation.explain import ExplainOptions

pytestmark = pytest.mark.flows


def test_rides_model_on_a_random_label_is_rejected_by_the_auc_gate(tmp_path: Path) -> None:
    generate_data(
        GenerateDataParams(
            dataset="rides",
            rows=4_000,
            seed=4,
            start=date(2026, 5, 1),
            end=date(2026, 6, 30),
            out_uri=str(tmp_path / "raw"),
        )
    )
    data_prep(
        DataPrepParams(
            dataset="rides",
            source_uri=str(tmp_path / "raw"),
            output_uri=str(tmp_path / "out"),
            dask_cluster_block="threads",
            feature_repo_block="tmp-feast",
        )
    )
    common = {
        "data_uri": str(tmp_path / "out"),
        "feature_repo_block": "tmp-feast",
        "registry_block": "tmp-registry",
    }
    trained = training(TrainingParams(dataset="rides", model_name="rides-test", **common))
    result = validation(
        ValidationParams(
            model_name="rides-test",
            candidate=trained.version,
            explain=ExplainOptions(rows=150, ebm_rows=1_000, pdp_features=1, local_rows=1),
            **common,
        )
    )
    assert result.decision == "rejected"
    assert result.failed_gates == ["minimum:auc"], result  # the random label, and nothing else
    assert 0.4 < result.metrics["auc"] < 0.6
    assert ModelRegistry.load("tmp-registry").registry().aliases("rides-test") == {}
