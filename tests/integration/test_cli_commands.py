"""The README's `mlops` commands that no other test runs, run as a user would: the installed
CLI, in a fresh folder (its `.mlops/` and `data/`), against a server it starts itself."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from tests.servers import BIN, ROOT, free_port

pytestmark = pytest.mark.integration


def _mlops(cwd: Path, env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [str(BIN / "mlops"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"mlops {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.timeout(400)
def test_server_generate_data_and_serving_commands(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env |= {"MLOPS_PREFECT_PORT": str(free_port()), "PYTHONPATH": str(ROOT)}
    try:
        started = _mlops(tmp_path, env, "server", "start")
        assert "Prefect server up" in started and (tmp_path / ".mlops/prefect/server.pid").exists()
        assert ": up" in _mlops(tmp_path, env, "server", "status")
        made = _mlops(
            tmp_path,
            env,
            *["generate-data", "--rows", "1000000", "--seed", "3", "--drift-start", "2026-01-01"],
            "--covariate-drift",
            "[amount, loan_amount]",
            "--concept-drift",
            "--out-uri",
            "data/drifted",
        )
        assert "generate-data" in made or "transactions" in made, made
        transactions = pd.read_parquet(tmp_path / "data/drifted/transactions")
        assert len(transactions) == 1_000_000
        after = transactions[transactions["event_ts"] >= pd.Timestamp("2026-01-01", tz="UTC")]
        before = transactions[transactions["event_ts"] < pd.Timestamp("2026-01-01", tz="UTC")]
        assert after["amount"].median() > 1.2 * before["amount"].median()  # the covariate drift
        assert "nothing served" in _mlops(tmp_path, env, "serving", "status")
        _mlops(tmp_path, env, "serving", "stop")
    finally:
        stopped = _mlops(tmp_path, env, "server", "stop")
    assert "stopped" in stopped and not (tmp_path / ".mlops/prefect/server.pid").exists()
    assert ": down" in _mlops(tmp_path, env, "server", "status")
