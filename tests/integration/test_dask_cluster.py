from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from distributed import Client

from features.credit_risk.generator import generate_demo
from flows.data_prep import DataPrepParams, data_prep
from tasks.data.publish import features_uri
from tasks.specs.dataset_spec import GenerateOptions
from tests.servers import BIN, free_port, wait_for

pytestmark = pytest.mark.integration


def test_data_prep_on_a_multi_process_dask_cluster(processes, api, tmp_path: Path) -> None:
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    processes.start(
        "scheduler",
        [
            str(BIN / "dask"),
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-dashboard",
        ],
    )
    for i in range(2):
        processes.start(
            f"worker{i}",
            [
                str(BIN / "dask"),
                "worker",
                address,
                "--nworkers",
                "1",
                "--nthreads",
                "1",
                "--memory-limit",
                "2GiB",
                "--no-dashboard",
                "--host",
                "127.0.0.1",
            ],
        )
    with Client(address, timeout=60) as client:
        wait_for(lambda: len(client.scheduler_info()["workers"]) == 2, 60, "two Dask workers")

        raw = tmp_path / "raw"
        generate_demo(
            str(raw), GenerateOptions(rows=8_000, seed=11, chunk_rows=2_000, dirty_rate=0.01)
        )
        result = data_prep(
            DataPrepParams(
                source_uri=str(raw),
                output_uri=str(tmp_path / "out"),
                dask_address=address,
                materialize=False,  # Feast has its own tests; this one is about the cluster
                max_reject_rate=0.3,  # small files: at least 4 defective rows in each
            )
        )

        executed = client.run(lambda dask_worker: dask_worker.state.executed_count)
        prefixes = client.run_on_scheduler(
            lambda dask_scheduler: sorted(dask_scheduler.task_prefixes)
        )
    assert len(executed) == 2 and all(n > 0 for n in executed.values()), executed
    assert {"transaction_windows", "build_features_task"} <= set(prefixes)  # ran on this cluster
    assert result.rows_out["labels"] == len(
        pd.read_parquet(Path(features_uri(str(tmp_path / "out"))) / "labels")
    )
    assert result.rows_rejected > 0
