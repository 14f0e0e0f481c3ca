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


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory):
    """moto's S3 + IAM server on 127.0.0.1, checking credentials; stopped by pid at the end."""
    from tests.s3_server import start_s3_server, stop_s3_server

    server = start_s3_server(tmp_path_factory.mktemp("moto") / "moto_server.log")
    try:
        yield server
    finally:
        stop_s3_server(server)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """`mlflow server` on 127.0.0.1 (SQLite, a local artifact root) for one test module; stopped
    by pid after it (its job consumer would otherwise run through the rest of the session)."""
    from tests.mlflow_server import start_mlflow_server, stop_mlflow_server

    server = start_mlflow_server(tmp_path_factory.mktemp("mlflow"))
    try:
        yield server
    finally:
        stop_mlflow_server(server)


@pytest.fixture(scope="session")
def s3_raw(s3_server, tiny_raw: Path) -> str:
    """`tiny_raw` uploaded to the moto server: its s3:// root."""
    from tests.s3_server import BUCKET, upload

    uri = f"s3://{BUCKET}/credit_risk/raw"
    upload(s3_server, tiny_raw, uri)
    return uri


@pytest.fixture
def no_ambient_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No AWS credentials from the environment, files or instance metadata: only what a
    DataSource passes reaches the store."""
    import os

    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))


# -- real servers shared by tests/integration and tests/faults (tests/servers.py) -------------


@pytest.fixture(scope="session")
def postgres():
    """Debian's PostgreSQL on 127.0.0.1 in a temporary data directory, for the Prefect servers
    of the integration and fault tests (a database each); stopped by pid at the end."""
    from flows.local_postgres import LocalPostgres

    with LocalPostgres() as server:
        yield server


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory, postgres):
    """A real `prefect server start` on PostgreSQL, stopped (SIGKILL if needed) at the end."""
    from tests.servers import prefect_on_postgres

    server = prefect_on_postgres(postgres, tmp_path_factory.mktemp("prefect-home"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def prefect_env(prefect_server) -> dict[str, str]:
    import os

    return {
        **os.environ,
        "PREFECT_API_URL": prefect_server.api_url,
        "PREFECT_HOME": str(prefect_server.home),
    }


@pytest.fixture
def api(prefect_server):
    """Point this process's Prefect client, and its events, at the real server."""
    from tests.servers import pointed_at

    with pointed_at(prefect_server):
        yield


@pytest.fixture
def processes(tmp_path: Path):
    from tests.servers import Processes

    procs = Processes(tmp_path)
    try:
        yield procs
    finally:
        procs.stop_all()
