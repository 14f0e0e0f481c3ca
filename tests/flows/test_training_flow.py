from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from blocks import FeatureRepo, ModelRegistry
from flows.training import TrainingParams, training
from tasks.data.publish import features_uri
from tasks.training.training_set import TrainingDataError
from tests.recount import compare

pytestmark = pytest.mark.flows


def _params(data_uri: Path, **extra) -> TrainingParams:
    return TrainingParams(
        data_uri=str(data_uri),
        feature_repo_block="prepared-feast",
        registry_block="tmp-registry",
        **extra,
    )


def test_training_registers_a_reproducible_candidate(prepared: Path) -> None:
    first = training(_params(prepared, model_name="credit-test"))
    second = training(_params(prepared, model_name="credit-test"))
    assert (first.version, second.version) == (1, 2)
    assert first.metrics["test_auc"] == second.metrics["test_auc"] > 0.6  # same seed, same model

    registry = ModelRegistry.load("tmp-registry").registry()
    version = registry.get("credit-test", 1)
    meta = version.metadata
    assert version.files == [
        "calibration.json",
        "drift-features.config.toml",
        "drift-features.x_ref.npy",
        "drift-scores.config.toml",
        "drift-scores.x_ref.npy",
        "drift.json",
        "features.json",
        "holdout.parquet",
        "model.onnx",
        "model.txt",
        "reference.parquet",
        "serving.json",
    ]
    assert meta["trainer"] == "lightgbm" and meta["seed"] == 0
    assert meta["params"]["class_imbalance"] == "none"
    assert meta["calibration"]["method"] == "platt" and meta["calibration"]["valid_rows"] > 100
    assert json.loads(registry.read("credit-test", 1, "calibration.json"))["method"] == "platt"
    assert {"test_ece", "test_uncalibrated_ece"} <= set(meta["metrics"])  # before and after
    assert meta["feature_fingerprint"].startswith("credit_risk_default_v1:")
    assert meta["data"]["train"]["to"] <= meta["data"]["valid"]["from"]
    assert meta["data"]["train"]["rows"] > meta["data"]["test"]["rows"] > 0
    assert {"lightgbm", "pandas", "feast"} <= set(meta["packages"])
    assert set(meta["categorical"]) == {"region_code", "home_ownership_code", "purpose_code"}
    reference = pd.read_parquet(registry.file_uri("credit-test", 1, "reference.parquet"))
    assert "loan_to_income" in reference.columns and len(reference) > 100
    assert registry.read("credit-test", 1, "model.txt") == registry.read(
        "credit-test", 2, "model.txt"
    )


def test_single_class_labels_fail_before_training_and_register_nothing(
    prepared: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "out"
    shutil.copytree(prepared, broken)
    labels_dir = Path(features_uri(str(broken))) / "labels"
    labels = pd.read_parquet(labels_dir)
    shutil.rmtree(labels_dir)
    labels_dir.mkdir()
    labels.assign(defaulted_90d=0).to_parquet(labels_dir / "part-0.parquet", index=False)
    registry = ModelRegistry.load("tmp-registry").registry()
    before = registry.models()
    with pytest.raises(TrainingDataError, match=r"label 'defaulted_90d' has a single class"):
        training(_params(broken, model_name="never-registered"))
    assert registry.models() == before


def test_unknown_labels_and_open_outcomes_are_left_out_and_counted(
    prepared: Path, tmp_path: Path
) -> None:
    """Rows whose label is not recorded yet, or whose 90-day outcome window is still open at
    the data's end, are left out of training and counted in the version's metadata."""
    partial = tmp_path / "out"
    shutil.copytree(prepared, partial)
    labels_dir = Path(features_uri(str(partial))) / "labels"
    labels = pd.read_parquet(labels_dir)
    unknown = labels.index % 10 == 0
    labels["defaulted_90d"] = labels["defaulted_90d"].where(~unknown).astype("float64")
    shutil.rmtree(labels_dir)
    labels_dir.mkdir()
    labels.to_parquet(labels_dir / "part-0.parquet", index=False)
    result = training(_params(partial, model_name="credit-partial"))
    meta = ModelRegistry.load("tmp-registry").registry().get("credit-partial", result.version)
    split = meta.metadata["split"]
    assert split["left_out_unknown_label"] == unknown.sum()
    end = labels["event_timestamp"].max()
    still_open = (labels["event_timestamp"] + pd.Timedelta(days=90) > end) & ~unknown
    assert split["left_out_open_outcome"] == still_open.sum() > 0
    assert split["horizon_days"] == 90 and split["embargo_days"] == 90
    test_from, valid_to = pd.Timestamp(split["test_from"]), pd.Timestamp(split["valid_to"])
    assert valid_to + pd.Timedelta(days=90) < test_from
    assert pd.Timestamp(split["train_to"]) + pd.Timedelta(days=90) < pd.Timestamp(
        split["valid_from"]
    )


def test_training_registers_a_horovod_trained_torch_model(prepared: Path) -> None:
    from tasks.training.torch_trainer import TorchParams

    result = training(
        _params(
            prepared,
            model_name="credit-torch",
            trainer="torch",
            torch=TorchParams(backend="horovod", processes=2, epochs=20, batch_size=128),
        )
    )
    assert result.metrics["world_size"] == 2 and result.metrics["test_auc"] > 0.55
    registry = ModelRegistry.load("tmp-registry").registry()
    version = registry.get("credit-torch", result.version)
    assert version.files == [
        "calibration.json",
        "drift-features.config.toml",
        "drift-features.x_ref.npy",
        "drift-scores.config.toml",
        "drift-scores.x_ref.npy",
        "drift.json",
        "features.json",
        "holdout.parquet",
        "model.json",
        "model.onnx",
        "model.pt",
        "reference.parquet",
        "serving.json",
    ]
    assert version.metadata["trainer"] == "torch" and version.metadata["backend"] == "horovod"


def test_every_labelled_row_has_window_counts_equal_to_a_recount(prepared: Path) -> None:
    """The training set's txn_count_7d and txn_count_30d for every labelled application equal
    an independent recount from the raw transactions (idle customers count 0, not last
    week's value)."""
    result = compare(
        prepared.parent / "raw", prepared, FeatureRepo.load("prepared-feast").settings()
    )
    assert result["rows"] > 1_000
    assert result == {"rows": result["rows"], "mismatches_7d": 0, "mismatches_30d": 0}
