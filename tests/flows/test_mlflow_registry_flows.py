"""training -> validation -> deployment, unchanged, with the registry in a real `mlflow server`
(SQLite, local artifact root) on loopback: versions, evidence, aliases and rollouts land in
MLflow's model registry."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from blocks import FeatureRepo, ModelRegistry, ServingTarget
from flows.deployment import DeploymentParams, deployment
from flows.training import TrainingParams, training
from flows.validation import ValidationParams, validation
from tasks.serving.local_target import LocalTarget, free_port, http_json
from tasks.validation.explain import ExplainOptions
from tests.flows.test_deployment_flow import _rows
from tests.mlflow_server import MlflowServer

pytestmark = pytest.mark.flows
NAME = "credit-mlflow"


@pytest.mark.timeout(600)
def test_training_validation_and_deployment_on_mlflow(
    prepared: Path, mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    ModelRegistry(
        backend="mlflow", root_uri=mlflow_server.url, cache_dir=str(tmp_path / "cache")
    ).save("mlflow-registry", overwrite=True)
    common = {"feature_repo_block": "prepared-feast", "registry_block": "mlflow-registry"}
    trained = training(TrainingParams(data_uri=str(prepared), model_name=NAME, **common))
    assert trained.version == 1
    checked = validation(
        ValidationParams(
            model_name=NAME,
            data_uri=str(prepared),
            explain=ExplainOptions(rows=150, ebm_rows=1_000, pdp_features=1, local_rows=1),
            **common,
        )
    )
    assert (checked.version, checked.decision) == (1, "challenger"), checked.failed_gates
    block = ServingTarget(
        state_dir=str(tmp_path / "serving"),
        port=free_port(),
        online_store=FeatureRepo.load("prepared-feast").sqlite_path,
    )
    block.save("mlflow-serving", overwrite=True)
    target = LocalTarget(block.local_settings(), NAME)
    try:
        deployed = deployment(
            DeploymentParams(
                model_name=NAME, registry_block="mlflow-registry", target_block="mlflow-serving"
            )
        )
        assert (deployed.decision, deployed.champion) == ("promoted", 1)
        rows = _rows(prepared, 3)
        status, answer = http_json(
            f"{target.url}/api/v1.0/predictions", {"jsonData": {"rows": rows}}
        )
        assert status == 200 and answer["meta"]["tags"]["version"] == "1", answer
    finally:
        target.stop_all()

    # all of it is in MLflow's own registry
    client = MlflowClient(mlflow_server.url)
    version = client.get_model_version(NAME, "1")
    assert int(client.get_model_version_by_alias(NAME, "champion").version) == 1
    assert int(client.get_model_version_by_alias(NAME, "challenger").version) == 1
    assert any(t.startswith("mlops.record.validation.") for t in version.tags)
    assert any(t.startswith("mlops.record.rollout.") for t in version.tags)
    files = {a.path for a in client.list_artifacts(version.run_id, "model")}
    assert {"model/metadata.json", "model/serving.json", "model/model.onnx"} <= files
    registry = ModelRegistry.load("mlflow-registry").registry()
    moves = registry.alias_history(NAME, "champion")
    assert [m.version for m in moves] == [1] and "flow run" in moves[0].by
