"""Benchmarks of the trainers.

(a) The LightGBM training task against bare `lightgbm.train`. Both fit the same 1M-row frame
    (20 numeric features, 2 categorical) with the same parameters and a fixed number of rounds
    (no early stopping, so both build the same trees), and both end with the model as LightGBM
    text; the task adds its parameter handling and metrics. Median of 3, interleaved.
(b) The PyTorch trainer with Horovod at 2 processes against 1 on CPU: samples/s and scaling
    efficiency (samples/s at 2 / (2 x samples/s at 1)), each process on one core (one
    thread), as data-parallel scaling is measured with equal resources per worker. The
    trainer's CPU cycle time (5 ms) and Horovod's default (1 ms) are both measured.
(c) Horovod against torch.distributed (torchrun), both at 2 processes.
Samples/s are measured inside the workers over the training epochs (launch excluded).

    python -m bench.train
"""

from __future__ import annotations

import argparse
import statistics
import time

import lightgbm as lgb
import numpy as np
import pandas as pd

from tasks.training.lightgbm_trainer import LightGBMParams, lgb_params, train_lightgbm
from tasks.training.torch_trainer import TorchParams, train_torch
from tasks.training.training_set import time_split


def frame(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 20))
    cats = rng.integers(0, 8, size=(rows, 2))
    logit = x[:, 0] - 0.8 * x[:, 1] + 0.5 * x[:, 2] * x[:, 3] + (cats[:, 0] == 3) - 2.0
    data = {f"x{i}": x[:, i] for i in range(20)} | {"c0": cats[:, 0], "c1": cats[:, 1]}
    data["ts"] = pd.date_range("2024-01-01", periods=rows, freq="s", tz="UTC")
    data["y"] = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--torch-rows", dest="torch_rows", type=int, default=200_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", dest="batch_size", type=int, default=8192)
    args = parser.parse_args()
    split = time_split(frame(args.rows), "ts")
    features, cats = [f"x{i}" for i in range(20)] + ["c0", "c1"], ["c0", "c1"]
    # early stopping patience above the round count: both runs build exactly `rounds` trees
    params = LightGBMParams(num_boost_round=args.rounds, early_stopping_rounds=args.rounds + 1)

    def bare() -> None:
        dtrain = lgb.Dataset(split.train[features], split.train["y"], categorical_feature=cats)
        dvalid = lgb.Dataset(split.valid[features], split.valid["y"], reference=dtrain)
        booster = lgb.train(
            lgb_params(params, split.train["y"], 0), dtrain, args.rounds, valid_sets=[dvalid]
        )
        booster.model_to_string()  # the model as text: what the task hands to the registry

    def task() -> None:
        train_lightgbm(split.train, split.valid, features, cats, "y", params, seed=0)

    times: dict[str, list[float]] = {"bare": [], "task": []}
    for _ in range(args.repeats):
        for name, fn in (("bare", bare), ("task", task)):  # interleaved: same machine state
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    bare_s, task_s = statistics.median(times["bare"]), statistics.median(times["task"])
    print(
        f"LightGBM, {len(split.train):,} training rows x {len(features)} features, "
        f"{args.rounds} rounds, median of {args.repeats}:"
    )
    print(f"  bare lightgbm.train: {bare_s:6.2f} s")
    print(f"  training task:       {task_s:6.2f} s")
    print(f"  overhead ratio: {task_s / bare_s:.3f}  (target <= 1.05)")

    def samples_per_s(backend: str, n: int, cycle_ms: float | None = None) -> float:
        params = TorchParams(
            backend=backend,  # type: ignore[arg-type]
            processes=n,
            epochs=args.epochs,
            batch_size=args.batch_size,
            hidden=[256, 128],
            threads_per_process=1,
            horovod_cycle_time_ms=cycle_ms,
        )
        train, valid = split.train.iloc[: args.torch_rows], split.valid.iloc[:20_000]
        trained = train_torch(train, valid, features, cats, "y", params, seed=0)
        return trained.metrics["samples_per_s"]

    configs = {
        "horovod x1": ("horovod", 1, None),
        "horovod x2": ("horovod", 2, None),
        "horovod x2, 1 ms cycle": ("horovod", 2, 1.0),
        "torch.distributed x2": ("torch_distributed", 2, None),
    }
    runs: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(args.repeats):  # interleaved, as above
        for name, config in configs.items():
            runs[name].append(samples_per_s(*config))
    sps = {name: statistics.median(values) for name, values in runs.items()}
    one, two = sps["horovod x1"], sps["horovod x2"]
    slow, ddp = sps["horovod x2, 1 ms cycle"], sps["torch.distributed x2"]
    print(
        f"PyTorch MLP, {args.torch_rows:,} rows, batch {args.batch_size} per worker, "
        f"{args.epochs} epochs, CPU, one thread per worker, median of {args.repeats} "
        "(samples/s):"
    )
    print(
        f"  horovod x1: {one:10,.0f}   horovod x2: {two:10,.0f}   "
        f"scaling efficiency {two / (2 * one):.2f}  (target >= 0.8)"
    )
    print(
        f"  horovod x2 at Horovod's default 1 ms cycle: {slow:10,.0f}   "
        f"scaling efficiency {slow / (2 * one):.2f}"
    )
    print(f"  torch.distributed x2: {ddp:10,.0f}   horovod / torch.distributed: {two / ddp:.2f}")


if __name__ == "__main__":
    main()
