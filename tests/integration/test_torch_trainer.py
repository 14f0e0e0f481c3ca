from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from deployments.torch_mlp import torch_predictor
from tasks.training.torch_trainer import TorchParams, launch_command, train_torch
from tasks.training.training_set import time_split

pytestmark = pytest.mark.integration


def _frame(n: int = 6_000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    cat = rng.integers(0, 5, n)
    logit = 2.0 * x1 - 1.5 * x2 + 1.5 * (cat == 3) - 1.0
    return pd.DataFrame(
        {
            "ts": pd.date_range("2025-01-01", periods=n, freq="h", tz="UTC"),
            "x1": x1,
            "x2": np.where(rng.random(n) < 0.05, np.nan, x2),
            "cat": cat,
            "y": (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int),
        }
    )


@pytest.fixture(scope="module")
def split():
    return time_split(_frame(), "ts")


@pytest.mark.parametrize(
    ("backend", "processes"), [("horovod", 1), ("horovod", 2), ("torch_distributed", 2)]
)
def test_data_parallel_training_learns_and_reloads(
    split, backend: str, processes: int, caplog: pytest.LogCaptureFixture
) -> None:
    params = TorchParams(backend=backend, processes=processes, epochs=4, batch_size=256)  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, logger="tasks.training.torch_trainer"):
        trained = train_torch(
            split.train, split.valid, ["x1", "x2", "cat"], ["cat"], "y", params, seed=1
        )
    epochs = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(epochs) == 4 and all(f"epoch {k}/4: loss " in epochs[k - 1] for k in range(1, 5))
    assert trained.metrics["world_size"] == processes
    assert trained.metrics["valid_auc"] > 0.85
    scores = torch_predictor(trained.state_dict, trained.config)(split.test)  # weights_only load
    assert scores.shape == (len(split.test),) and np.isfinite(scores).all()


def test_horovod_cycle_time_is_longer_on_cpu(tmp_path) -> None:
    def cycle(**params) -> str | None:
        command = launch_command(TorchParams(processes=2, **params), tmp_path / "config.json")
        flag = "--cycle-time-ms"
        return command[command.index(flag) + 1] if flag in command else None

    assert cycle() == "5.0"  # CPU: fewer wake-ups of Horovod's thread on busy cores
    assert cycle(device="cuda") is None  # Horovod's own default
    assert cycle(horovod_cycle_time_ms=2.5) == "2.5"
