from __future__ import annotations

import pytest
from prefect.testing.utilities import prefect_test_harness

from blocks import DaskCluster

pytestmark = pytest.mark.flows


@pytest.fixture(scope="session", autouse=True)
def prefect_harness():
    """One temporary Prefect server (SQLite) for every flow test."""
    with prefect_test_harness(server_startup_timeout=120):
        DaskCluster(processes=False, n_workers=1, threads_per_worker=2, memory_limit="2GiB").save(
            "threads", overwrite=True
        )
        yield
