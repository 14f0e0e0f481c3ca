from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from prefect.deployments import run_deployment

from tests.servers import BIN, prefect

pytestmark = pytest.mark.integration


def test_prefect_deploy_all_then_a_process_worker_runs_a_flow(
    prefect_env, api, processes, tmp_path: Path
) -> None:
    prefect(prefect_env, "work-pool", "create", "mlops-local", "--type", "process", "--overwrite")
    out = prefect(prefect_env, "--no-prompt", "deploy", "--all")
    assert "generate-data/generate-data" in out and "data-prep/data-prep" in out
    processes.start(
        "worker", [str(BIN / "prefect"), "worker", "start", "-p", "mlops-local"], env=prefect_env
    )

    raw = tmp_path / "raw"
    run = run_deployment(
        "generate-data/generate-data",
        parameters={"params": {"rows": 2_000, "seed": 1, "out_uri": str(raw), "chunk_rows": 1_000}},
        timeout=240,
    )
    assert run.state is not None and run.state.is_completed(), (
        run.state,
        processes.log("worker")[-3000:],
    )
    assert len(pd.read_parquet(raw / "transactions")) == 2_000
