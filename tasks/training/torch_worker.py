"""One data-parallel training process: `python -m tasks.training.torch_worker CONFIG.json`.

Launched N times by `horovodrun` (backend horovod) or `torchrun` (backend torch_distributed),
or called in process for N=1. Every rank reads the same training file and trains on its
DistributedSampler share; rank 0 writes the state_dict and the run's throughput, and reports
each epoch: to `on_epoch` in process, as one EPOCH_LINE on stdout when launched.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from deployments.torch_mlp import Encoding, TabularMLP

# what a launched rank 0 prints once per epoch; the launching process parses it (torch_trainer)
EPOCH_LINE = "epoch {epoch}/{epochs}: loss {loss:.5f}, {seconds:.1f} s"
OnEpoch = Callable[[int, int, float, float], None]  # epoch (from 1), epochs, mean loss, seconds


def print_epoch(epoch: int, epochs: int, loss: float, seconds: float) -> None:
    print(EPOCH_LINE.format(epoch=epoch, epochs=epochs, loss=loss, seconds=seconds), flush=True)


def run(config: dict[str, Any], on_epoch: OnEpoch | None = None) -> None:
    backend = config["backend"] if config["world_size"] > 1 else "single"
    rank, size, hvd = 0, 1, None
    if backend == "horovod":
        import horovod.torch

        hvd = horovod.torch
        hvd.init()
        rank, size = hvd.rank(), hvd.size()
    elif backend == "torch_distributed":
        import torch.distributed as dist

        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        rank, size = dist.get_rank(), dist.get_world_size()
    # each process gets its share of the cores: N all-core thread pools oversubscribe the CPU
    local = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("HOROVOD_LOCAL_SIZE", size)))
    threads = config.get("threads") or max(1, (os.cpu_count() or 1) // max(local, 1))
    torch.set_num_threads(threads)
    torch.manual_seed(config["seed"])
    local_rank = hvd.local_rank() if hvd is not None else int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device(f"cuda:{local_rank}" if config["device"] == "cuda" else "cpu")

    workdir = Path(config["workdir"])
    frame = pd.read_parquet(workdir / "train.parquet")
    encoding = Encoding(**config["encoding"])
    numeric, codes = encoding.transform(frame)
    labels = torch.as_tensor(frame[config["label"]].to_numpy("float32"))
    data = TensorDataset(numeric, codes, labels)
    sampler: DistributedSampler[tuple[torch.Tensor, ...]] = DistributedSampler(
        data, num_replicas=size, rank=rank, shuffle=True, seed=config["seed"]
    )
    loader = DataLoader(data, batch_size=config["batch_size"], sampler=sampler)

    model: torch.nn.Module = TabularMLP(encoding, **config["model"]).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config["learning_rate"] * size)
    if hvd is not None:
        hvd.broadcast_parameters(model.state_dict(), root_rank=0)
        optimizer = hvd.DistributedOptimizer(optimizer, named_parameters=model.named_parameters())
        hvd.broadcast_optimizer_state(optimizer, root_rank=0)
    elif backend == "torch_distributed":
        model = DistributedDataParallel(model)
    weight = config.get("pos_weight")  # None: the classes as they are
    loss_fn = torch.nn.BCEWithLogitsLoss(
        pos_weight=None if weight is None else torch.tensor(weight, device=device)
    )

    start, seen = time.perf_counter(), 0
    for epoch in range(config["epochs"]):
        sampler.set_epoch(epoch)
        model.train()
        total_loss, rows = torch.zeros((), device=device), 0  # summed on device: no sync a batch
        for x, c, y in loader:
            x, c, y = x.to(device), c.to(device), y.to(device)
            optimizer.zero_grad()
            loss = loss_fn(model(x, c), y)
            loss.backward()
            optimizer.step()
            total_loss += loss.detach() * len(y)
            rows += len(y)
            seen += len(y)
        if rank == 0 and on_epoch is not None:  # rank 0's share of the rows
            mean = float(total_loss.item()) / max(rows, 1)
            on_epoch(epoch + 1, config["epochs"], mean, time.perf_counter() - start)
    elapsed = time.perf_counter() - start
    if rank == 0:
        inner = model.module if isinstance(model, DistributedDataParallel) else model
        state = inner.state_dict()
        torch.save({k: v.detach().cpu() for k, v in state.items()}, workdir / "model.pt")
        (workdir / "stats.json").write_text(
            json.dumps(
                {
                    "world_size": size,
                    "backend": backend,
                    "samples_per_s": seen * size / elapsed if elapsed > 0 else 0.0,
                    "seconds": elapsed,
                    "gpu_peak_bytes": (
                        torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
                    ),
                }
            )
        )
    if backend == "torch_distributed":
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    run(json.loads(Path(sys.argv[1]).read_text()), on_epoch=print_epoch)
