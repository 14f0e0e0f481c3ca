from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState
from prefect.client.schemas.filters import FlowRunFilterStateType as StateTypeFilter
from prefect.client.schemas.objects import StateType
from prefect.flow_runs import resume_flow_run

from blocks import ModelRegistry, ValidationPolicy
from deployments.predictor import ModelLoadError
from flows.training import TrainingParams, training
from flows.validation import ValidationParams, ValidationResult, validation
from tasks.data.publish import features_uri
from tasks.registry.store import RegistryError
from tasks.validation.explain import ExplainOptions
from tasks.validation.gates import GatePolicy
from tasks.validation.holdout import HoldoutError

pytestmark = pytest.mark.flows
SMALL = ExplainOptions(rows=150, ebm_rows=1_000, pdp_features=1, local_rows=1)


def _train(data_uri: Path, name: str) -> int:
    return training(
        TrainingParams(
            data_uri=str(data_uri),
            model_name=name,
            feature_repo_block="prepared-feast",
            registry_block="tmp-registry",
        )
    ).version


def _validate(data_uri: Path, name: str, **extra) -> ValidationResult:
    return validation(
        ValidationParams(
            model_name=name,
            data_uri=str(data_uri),
            feature_repo_block="prepared-feast",
            registry_block="tmp-registry",
            **extra,
        )
    )


def _registry():
    return ModelRegistry.load("tmp-registry").registry()


def _gates(registry, result) -> list[dict]:
    evidence = registry.read_record(
        "credit-val", result.version, "validation", result.record, "evidence.json"
    )
    return json.loads(evidence)["gates"]


def _read_artifact(key: str) -> str:
    with get_client(sync_client=True) as client:
        artifact = client.read_latest_artifacts()
    found = [a for a in artifact if a.key == key]
    assert found, f"no artifact {key}"
    return str(found[0].data)


def test_good_candidate_becomes_challenger_and_shuffled_labels_are_rejected(
    prepared: Path, tmp_path: Path
) -> None:
    assert _train(prepared, "credit-val") == 1
    first = _validate(prepared, "credit-val")
    assert first.decision == "challenger" and first.failed_gates == [], first
    assert first.champion is None and first.metrics["auc"] > 0.6
    registry = _registry()
    assert registry.aliases("credit-val") == {"challenger": 1}

    evidence = json.loads(
        registry.read_record("credit-val", 1, "validation", first.record, "evidence.json")
    )
    gates = {g["gate"] for g in evidence["gates"]}
    assert {"minimum:auc", "data:min_test_rows", "data:feature_set"} <= gates
    assert "behaviour:monotonic[missed_payments_12m]" in gates  # trained with the constraint
    assert "behaviour:invariance[online_share_30d+online_share_90d]" in gates
    assert not any(g.startswith("regression:") for g in gates)  # no champion yet
    segments = {s["segment"] for s in evidence["segments"]["1"]}
    assert {"region=north", "income_band=[30000, 60000)"} <= segments
    assert set(evidence["metrics"]["1"]) == {"auc", "pr_auc", "logloss", "brier", "ece"}
    assert pd.Timestamp(evidence["data"]["test_from"]) > pd.Timestamp(
        evidence["data"]["trained_to"]
    )
    importances = json.loads(
        registry.read_record("credit-val", 1, "validation", first.record, "importances.json")
    )
    top = max(importances["candidate v1"], key=importances["candidate v1"].get)
    assert top in evidence["glass_box"]["importances"]
    png = registry.read_record("credit-val", 1, "validation", first.record, "importances.png")
    assert png.startswith(b"\x89PNG")
    assert {e["method"] for e in evidence["local_explanations"]} == {"shap", "lime"}
    assert "All gates passed" in _read_artifact("validation-credit-val")

    registry.set_alias("credit-val", "champion", 1)  # what the deployment flow will do
    shuffled = tmp_path / "out"
    shutil.copytree(prepared, shuffled)
    labels_dir = Path(features_uri(str(shuffled))) / "labels"
    labels = pd.read_parquet(labels_dir)
    rng = np.random.default_rng(0)
    labels["defaulted_90d"] = rng.permutation(labels["defaulted_90d"].to_numpy())
    shutil.rmtree(labels_dir)
    labels_dir.mkdir()
    labels.to_parquet(labels_dir / "part-0.parquet", index=False)
    assert _train(shuffled, "credit-val") == 2

    second = _validate(prepared, "credit-val", explain=SMALL)  # the true labels judge it
    assert second.decision == "rejected" and second.champion == 1
    assert {"minimum:auc", "regression:auc", "regression:pr_auc"} <= set(second.failed_gates), (
        _gates(registry, second)
    )
    assert registry.aliases("credit-val") == {"challenger": 1, "champion": 1}
    decision = json.loads(
        registry.read_record(
            "credit-val",
            2,
            "decision",
            registry.records("credit-val", 2, "decision")[-1],
            "decision.json",
        )
    )
    assert decision["decision"] == "rejected" and "minimum:auc" in decision["failed_gates"]
    markdown = _read_artifact("validation-credit-val")
    assert "REJECTED" in markdown and "`minimum:auc`" in markdown
    assert "importance share moved most" in markdown


def _paused_run_id(deadline_s: float = 120):
    with get_client(sync_client=True) as client:
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=StateTypeFilter(any_=[StateType.PAUSED]))
                )
            )
            if runs:
                return runs[0].id
            time.sleep(0.5)
    raise AssertionError("the validation flow never paused")


def test_approval_pause_is_resumed_through_the_api(prepared: Path) -> None:
    assert _train(prepared, "credit-approve") == 1
    ValidationPolicy(policy=GatePolicy(require_approval=True, approval_timeout_s=2)).save(
        "approve-fast", overwrite=True
    )
    timed_out = _validate(prepared, "credit-approve", policy_block="approve-fast", explain=SMALL)
    assert timed_out.decision == "rejected" and timed_out.failed_gates == ["approval:timeout"]
    assert _registry().aliases("credit-approve") == {}

    ValidationPolicy(policy=GatePolicy(require_approval=True, approval_timeout_s=300)).save(
        "approve", overwrite=True
    )
    results: list[ValidationResult] = []
    runner = threading.Thread(
        target=lambda: results.append(
            _validate(prepared, "credit-approve", policy_block="approve", explain=SMALL)
        )
    )
    runner.start()
    resume_flow_run(_paused_run_id(), run_input={"approve": True, "reviewer": "risk-officer"})
    runner.join(timeout=120)
    assert results and results[0].decision == "challenger"
    assert results[0].approval and results[0].approval["reviewer"] == "risk-officer"
    assert _registry().aliases("credit-approve") == {"challenger": 1}


def test_bad_input_is_named_and_aliases_stay(prepared: Path, tmp_path: Path) -> None:
    registry = _registry()
    assert _train(prepared, "credit-bad") == 1
    registry.set_alias("credit-bad", "champion", 1)
    with pytest.raises(RegistryError, match=r"model 'credit-bad' has no version 9"):
        _validate(prepared, "credit-bad", candidate=9)

    good = registry.get("credit-bad", 1)
    files = {f: registry.read("credit-bad", 1, f) for f in good.files}
    registry.register("credit-bad", {**files, "model.txt": b"not a lightgbm model"}, good.metadata)
    with pytest.raises(ModelLoadError, match=r"model 'credit-bad' v2: cannot load model.txt"):
        _validate(prepared, "credit-bad", candidate=2)

    unlabelled = tmp_path / "unlabelled.parquet"
    labels = pd.read_parquet(Path(features_uri(str(prepared))) / "labels")
    labels.drop(columns=["defaulted_90d"]).to_parquet(unlabelled, index=False)
    with pytest.raises(
        HoldoutError, match=r"unlabelled.parquet: .*no label column 'defaulted_90d'"
    ):
        _validate(prepared, "credit-bad", candidate=1, labels_uri=str(unlabelled))
    assert registry.aliases("credit-bad") == {"champion": 1}
    assert registry.records("credit-bad", 1, "decision") == []


def test_a_torch_candidate_is_validated_like_any_other(prepared: Path) -> None:
    from tasks.training.torch_trainer import TorchParams

    training(
        TrainingParams(
            data_uri=str(prepared),
            model_name="credit-mlp",
            trainer="torch",
            torch=TorchParams(processes=1, epochs=20, batch_size=128),
            feature_repo_block="prepared-feast",
            registry_block="tmp-registry",
        )
    )
    result = _validate(prepared, "credit-mlp", explain=SMALL)
    assert result.metrics["auc"] > 0.55
    evidence = json.loads(
        _registry().read_record("credit-mlp", 1, "validation", result.record, "evidence.json")
    )
    assert {g["gate"] for g in evidence["gates"]} >= {
        "minimum:auc",
        "behaviour:monotonic[missed_payments_12m]",
    }
    assert (result.decision == "challenger") == (result.failed_gates == [])
    aliases = {"challenger": 1} if result.decision == "challenger" else {}
    assert _registry().aliases("credit-mlp") == aliases
