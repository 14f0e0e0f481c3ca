from __future__ import annotations

import subprocess
import sys

import pytest

from blocks import DaskCluster, DataSource, FeatureRepo

pytestmark = pytest.mark.integration


def test_prefect_block_register_against_a_real_server(prefect_env, api) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "prefect", "block", "register", "-m", "blocks"],
        env=prefect_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Successfully registered 10 blocks" in done.stdout

    listed = subprocess.run(
        [sys.executable, "-m", "prefect", "block", "type", "ls"],
        env=prefect_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    for slug in (
        "mlops-data-source",
        "mlops-dask-cluster",
        "mlops-feature-repo",
        "mlops-dataset-spec",
        "mlops-validation-policy",
        "mlops-serving-target",
        "mlops-rollout-policy",
    ):
        assert slug in listed.stdout

    DataSource(uri="s3://bucket/raw", format="csv", secret="s3cr3t").save("lake", overwrite=True)
    loaded = DataSource.load("lake")
    assert loaded.uri == "s3://bucket/raw" and loaded.format == "csv"
    assert loaded.secret is not None and loaded.secret.get_secret_value() == "s3cr3t"
    DaskCluster(address="tcp://10.0.0.5:8786").save("remote", overwrite=True)
    runner = DaskCluster.load("remote").task_runner()
    assert runner.address == "tcp://10.0.0.5:8786"
    FeatureRepo(online_store="redis", redis_connection_string="cache:6379,password=pw").save(
        "scale", overwrite=True
    )
    settings = FeatureRepo.load("scale").settings()
    assert settings.online_store == "redis"
    assert settings.redis_connection_string == "cache:6379,password=pw"


def test_embedded_defaults_need_no_saved_block() -> None:
    runner = DaskCluster().task_runner()
    assert runner.address is None and runner.cluster_kwargs["n_workers"] == 2
