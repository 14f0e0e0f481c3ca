from __future__ import annotations

from pathlib import Path

import pytest
from prefect.testing.utilities import prefect_test_harness

from blocks import DaskCluster, FeatureRepo, ModelRegistry

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.flows


@pytest.fixture(scope="session", autouse=True)
def prefect_harness(tmp_path_factory: pytest.TempPathFactory):
    """One temporary Prefect server (SQLite) for every flow test, with blocks saved for them."""
    feast = tmp_path_factory.mktemp("feast")
    with prefect_test_harness(server_startup_timeout=120):
        DaskCluster(processes=False, n_workers=1, threads_per_worker=2, memory_limit="2GiB").save(
            "threads", overwrite=True
        )
        FeatureRepo(
            repo_path=str(ROOT / "features"),
            registry_path=str(feast / "registry.db"),
            sqlite_path=str(feast / "online.db"),
        ).save("tmp-feast", overwrite=True)
        ModelRegistry(root_uri=str(tmp_path_factory.mktemp("registry"))).save(
            "tmp-registry", overwrite=True
        )
        yield
