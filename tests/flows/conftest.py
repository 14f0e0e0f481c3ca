from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest
from prefect.testing.utilities import prefect_test_harness

from blocks import DaskCluster, FeatureRepo, ModelRegistry
from flows.data_prep import DataPrepParams, data_prep
from flows.generate_data import GenerateDataParams, generate_data

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
        # `prepared`'s own store: tests that run data_prep on other data use tmp-feast, so the
        # order tests run in never changes what the trained models read
        FeatureRepo(
            repo_path=str(ROOT / "features"),
            registry_path=str(feast / "prepared-registry.db"),
            sqlite_path=str(feast / "prepared-online.db"),
        ).save("prepared-feast", overwrite=True)
        ModelRegistry(root_uri=str(tmp_path_factory.mktemp("registry"))).save(
            "tmp-registry", overwrite=True
        )
        yield


@pytest.fixture(scope="session")
def prepared(prefect_harness, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Credit-risk data through data_prep into the prepared-feast store; its output folder."""
    root = tmp_path_factory.mktemp("train")
    generate_data(
        # 2.5 years: room for the 90-day horizon and the embargoes between the splits; up to
        # yesterday, so that what the online store serves now is as fresh as what was trained on
        GenerateDataParams(
            rows=150_000,
            seed=5,
            start=date.today() - timedelta(days=911),
            end=date.today() - timedelta(days=1),
            out_uri=str(root / "raw"),
            chunk_rows=50_000,
        )
    )
    data_prep(
        DataPrepParams(
            source_uri=str(root / "raw"),
            output_uri=str(root / "out"),
            dask_cluster_block="threads",
            feature_repo_block="prepared-feast",
        )
    )
    return root / "out"
