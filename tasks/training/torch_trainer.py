"""The PyTorch trainer: a tabular MLP trained data-parallel with Horovod or torch.distributed.

N > 1 processes are launched with `horovodrun -np N --gloo` (NCCL where GPUs are present) or
`torchrun --nproc_per_node N`; N = 1 trains in this process without a launcher. Rank 0 writes a
state_dict, loaded back here with `weights_only=True`. Each epoch goes to the run's log and to
progress (tasks/progress.py): a launched rank 0 prints one line per epoch, read here line by line.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from deployments.torch_mlp import Encoding, torch_predictor
from tasks.progress import Progress, progress, run_logger
from tasks.training.torch_worker import run
from tasks.validation.metrics import binary_metrics

# torch_worker.EPOCH_LINE, behind whatever prefix the launcher adds ("[0]<stdout>:")
EPOCH = re.compile(r"epoch (\d+)/(\d+): loss \S+, \S+ s")
TIMEOUT_S = 3_600
# bench/train, 2 CPU workers on 2 cores: ~72k samples/s at Horovod's 1 ms, ~90k at 5 ms
CPU_CYCLE_TIME_MS = 5.0


class TorchParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: Literal["horovod", "torch_distributed"] = "horovod"
    processes: int = Field(default=1, ge=1, le=64, description="Data-parallel workers.")
    device: Literal["cpu", "cuda"] = "cpu"
    epochs: int = Field(default=5, ge=1, le=1_000)
    batch_size: int = Field(default=512, ge=8, le=65_536)
    learning_rate: float = Field(default=1e-3, gt=0.0, le=1.0, description="Per worker.")
    embedding_dim: int = Field(default=4, ge=1, le=256)
    hidden: list[int] = Field(default_factory=lambda: [64, 32], min_length=1, max_length=8)
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    class_imbalance: Literal["none", "pos_weight"] = Field(
        default="none",
        description="pos_weight: weigh positives by negatives per positive in the loss; this "
        "inflates the predicted probabilities, which calibration then has to undo.",
    )
    threads_per_process: int | None = Field(
        default=None, ge=1, le=256, description="Default: the cores divided among the processes."
    )
    horovod_cycle_time_ms: float | None = Field(
        default=None,
        gt=0.0,
        le=1_000.0,
        description="Horovod's background-thread cycle. Default: 5 ms on CPU, Horovod's own "
        "(1 ms) on GPU: on CPU workers fill every core, and each wake-up preempts training.",
    )


@dataclass(frozen=True)
class TrainedTorch:
    state_dict: bytes
    config: dict[str, object]
    metrics: dict[str, float]


class TrainerError(RuntimeError):
    """A launched training run that failed; the message carries its last output lines."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch_command(params: TorchParams, config_path: Path) -> list[str]:
    bin_dir = Path(sys.executable).parent
    worker = [sys.executable, "-m", "tasks.training.torch_worker", str(config_path)]
    n = str(params.processes)
    if params.backend == "horovod":
        cycle = params.horovod_cycle_time_ms or (
            CPU_CYCLE_TIME_MS if params.device == "cpu" else None
        )
        tuning = ["--cycle-time-ms", str(cycle)] if cycle else []
        hosts = ["-H", f"localhost:{n}", "--gloo"]
        return [str(bin_dir / "horovodrun"), "-np", n, *hosts, *tuning, *worker]
    return [
        str(bin_dir / "torchrun"),
        "--nproc_per_node",
        n,
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        "-m",
        "tasks.training.torch_worker",
        str(config_path),
    ]


def _launch(
    command: list[str],
    bar: Progress,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    name: str,
) -> tuple[int, list[str]]:
    """Run the launcher, reading its output line by line: rank 0's epoch lines go to the log
    (info) and to `bar`, every other line to debug. Returns the exit code and the last 15 lines;
    killed after TIMEOUT_S, raising `subprocess.TimeoutExpired` as `subprocess.run` would."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    tail: deque[str] = deque(maxlen=15)
    timed_out = threading.Event()
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
    ) as proc:

        def kill() -> None:
            timed_out.set()
            proc.kill()

        timer = threading.Timer(TIMEOUT_S, kill)
        timer.start()
        try:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.rstrip()
                tail.append(line)
                found = EPOCH.search(line)
                if found:
                    logger.info("PyTorch %s, rank 0: %s", name, found.group(0))
                    bar.update(int(found.group(1)))
                else:
                    logger.debug("%s", line)
            code = proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:  # interrupted here: the launcher must not outlive the task
                proc.kill()
    if timed_out.is_set():
        raise subprocess.TimeoutExpired(command, TIMEOUT_S, output="\n".join(tail))
    return code, [*tail]


def train_torch(
    train: pd.DataFrame,
    valid: pd.DataFrame,
    features: list[str],
    categorical: list[str],
    label: str,
    params: TorchParams,
    seed: int,
) -> TrainedTorch:
    encoding = Encoding.fit(train, features, categorical)
    model_config = {
        "embedding_dim": params.embedding_dim,
        "hidden": params.hidden,
        "dropout": params.dropout,
    }
    positives = float(train[label].sum())
    weight = (len(train) - positives) / max(positives, 1.0)
    with tempfile.TemporaryDirectory(prefix="mlops-torch-") as tmp:
        workdir = Path(tmp)
        train[[*features, label]].to_parquet(workdir / "train.parquet", index=False)
        config = {
            "backend": params.backend,
            "world_size": params.processes,
            "device": params.device,
            "workdir": str(workdir),
            "encoding": encoding.to_dict(),
            "model": model_config,
            "label": label,
            "epochs": params.epochs,
            "batch_size": params.batch_size,
            "learning_rate": params.learning_rate,
            "pos_weight": weight if params.class_imbalance == "pos_weight" else None,
            "seed": seed,
            "threads": params.threads_per_process,
        }
        config_path = workdir / "config.json"
        config_path.write_text(json.dumps(config))
        logger = run_logger(__name__)
        name = "in process" if params.processes == 1 else f"{params.backend} x{params.processes}"
        with progress(f"PyTorch ({name}): {params.epochs} epochs", params.epochs) as bar:
            if params.processes == 1:

                def on_epoch(epoch: int, epochs: int, loss: float, seconds: float) -> None:
                    logger.info(
                        "PyTorch epoch %d/%d: loss %.5f, %.1f s", epoch, epochs, loss, seconds
                    )
                    bar.update(epoch)

                run(config, on_epoch=on_epoch)
            else:
                code, tail = _launch(launch_command(params, config_path), bar, logger, name)
                if code != 0 or not (workdir / "model.pt").exists():
                    raise TrainerError(
                        f"{params.backend} training with {params.processes} processes failed:\n"
                        + "\n".join(tail)
                    )
        state = (workdir / "model.pt").read_bytes()
        stats = json.loads((workdir / "stats.json").read_text())
    saved = {"encoding": encoding.to_dict(), "model": model_config}
    scores = torch_predictor(state, saved)(valid)
    metrics = {
        **binary_metrics(valid[label].to_numpy(), scores, prefix="valid_"),
        "samples_per_s": float(stats["samples_per_s"]),
        "world_size": float(stats["world_size"]),
        "gpu_peak_bytes": float(stats["gpu_peak_bytes"]),
    }
    return TrainedTorch(state_dict=state, config=saved, metrics=metrics)
