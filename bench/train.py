"""Benchmarks of the trainers.

(a) The training flow's fit task as the flow runs it, Prefect included, against bare
    `lightgbm.train`. Flow side: a `@flow` calling `tasks.training.prefect_tasks.fit_task`
    ("lightgbm"). Two spans are timed: the `fit_task` call inside the flow body (task run
    created, tracked and finished through the API; the trainer's parameter handling, training,
    the model as text and the predictor built from it), and the whole flow call (the flow run
    created and finished as well). The API is `prefect.testing.utilities.prefect_test_harness()`
    (a Prefect server subprocess on a temporary SQLite database, its telemetry off), started
    once before (a)'s warm-up and stopped after (a). Bare side: `lgb.Dataset` x2 + `lgb.train`
    + `model_to_string()`. Same frame (20 numeric features, 2 categorical), same parameters
    (`lgb_params`), the same validation set evaluated every round, the same number of rounds
    (early stopping patience above the round count, so both build every tree). One untimed
    warm-up of each side on a 2,000-row slice first (printed); then the sides alternate,
    median of N each.
(b) The PyTorch trainer on CPU, 2 processes with Horovod (Gloo) against 1 process (in
    process: no launcher, no Horovod, as `processes=1` runs): samples/s and scaling efficiency
    (samples/s at 2 / (2 x samples/s at 1)), one thread per process. The trainer's CPU cycle
    time (5 ms) and Horovod's default (1 ms) are both measured.
(c) Horovod against torch.distributed (torchrun), both at 2 processes.
Samples/s are measured inside the workers over the training epochs (launch excluded); the
configurations of (b) and (c) alternate, median of N each.

    python -m bench.train
    python -m bench.train --rows 5000 --rounds 5 --repeats 2 --torch-rows 2000 --epochs 1
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import lightgbm as lgb
import numpy as np
import pandas as pd
from prefect import flow
from prefect.settings import PREFECT_SERVER_ANALYTICS_ENABLED, temporary_settings
from prefect.testing.utilities import prefect_test_harness

from bench.results import add_json_arg, write_json
from tasks.progress import progress
from tasks.training.lightgbm_trainer import LightGBMParams, lgb_params
from tasks.training.prefect_tasks import fit_task
from tasks.training.torch_trainer import TorchParams, train_torch
from tasks.training.trainers import TrainingInputs
from tasks.training.training_set import Split, time_split

FEATURES = [f"x{i}" for i in range(20)] + ["c0", "c1"]
CATEGORICAL = ["c0", "c1"]


def frame(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 20))
    cats = rng.integers(0, 8, size=(rows, 2))
    logit = x[:, 0] - 0.8 * x[:, 1] + 0.5 * x[:, 2] * x[:, 3] + (cats[:, 0] == 3) - 2.0
    data = {f"x{i}": x[:, i] for i in range(20)} | {"c0": cats[:, 0], "c1": cats[:, 1]}
    data["ts"] = pd.date_range("2024-01-01", periods=rows, freq="s", tz="UTC")
    data["y"] = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame(data)


def bare_lightgbm(split: Split, params: LightGBMParams) -> lgb.Booster:
    """Bare LightGBM: datasets, training with the validation set, the model as text."""
    dtrain = lgb.Dataset(split.train[FEATURES], split.train["y"], categorical_feature=CATEGORICAL)
    dvalid = lgb.Dataset(
        split.valid[FEATURES], split.valid["y"], reference=dtrain, categorical_feature=CATEGORICAL
    )
    booster = lgb.train(
        lgb_params(params, split.train["y"], 0),
        dtrain,
        params.num_boost_round,
        valid_sets=[dvalid],
        valid_names=["valid"],
    )
    booster.model_to_string()  # the model as text: what the task hands to the registry
    return booster


def fit_flow(split: Split, params: LightGBMParams) -> Callable[[], tuple[bytes, float]]:
    """A flow running the training flow's fit task on `split`; returns the model text and the
    seconds of the `fit_task` call. The flow takes no parameters: as in the training flow, the
    data never passes through the API."""
    inputs = TrainingInputs(split, FEATURES, CATEGORICAL, "y", seed=0)

    @flow(name="bench-train-fit")
    def bench_fit() -> tuple[bytes, float]:
        start = time.perf_counter()
        fitted = fit_task("lightgbm", inputs, params)
        return fitted.files["model.txt"], time.perf_counter() - start

    return bench_fit


def lightgbm_comparison(split: Split, rounds: int, repeats: int) -> dict[str, object]:
    # early stopping patience above the round count: both runs build exactly `rounds` trees
    params = LightGBMParams(num_boost_round=rounds, early_stopping_rounds=rounds + 1)
    small = Split(split.train.iloc[:2_000], split.valid.iloc[:500], split.test.iloc[:0])
    warm: dict[str, float] = {}
    for name, fn in (
        ("bare", lambda: bare_lightgbm(small, params)),
        ("flow", fit_flow(small, params)),
    ):
        start = time.perf_counter()
        fn()
        warm[name] = time.perf_counter() - start

    run_flow = fit_flow(split, params)
    times: dict[str, list[float]] = {"bare": [], "task": [], "flow": []}
    booster, model_text = None, b""
    with progress("LightGBM: bare and flow, alternating", repeats) as bar:
        for _ in range(repeats):
            start = time.perf_counter()
            booster = bare_lightgbm(split, params)
            times["bare"].append(time.perf_counter() - start)
            start = time.perf_counter()
            model_text, task_s = run_flow()
            times["flow"].append(time.perf_counter() - start)
            times["task"].append(task_s)
            bar.advance()
    assert booster is not None
    # the task's text holds the trees up to the best validation iteration
    best = lgb.Booster(model_str=model_text.decode()).num_trees()
    same = booster.model_to_string(num_iteration=best).encode() == model_text
    med = {name: statistics.median(values) for name, values in times.items()}
    print(
        f"(a) LightGBM, {len(split.train):,} training rows x {len(FEATURES)} features, "
        f"{rounds} rounds, sides alternating, median of {repeats}:"
    )
    labels = {
        "bare": "bare: lgb.Dataset x2 + lgb.train + model_to_string",
        "task": "fit_task call inside a @flow (task run included)",
        "flow": "the whole @flow call (flow run created and finished)",
    }
    for name, label in labels.items():
        print(f"  {label:<55} {med[name]:8.2f} s")
    print(f"  ratio fit_task / bare: {med['task'] / med['bare']:.3f}  (target <= 1.05)")
    print(f"  ratio flow / bare:     {med['flow'] / med['bare']:.3f}")
    print(f"  same model (trees up to the best iteration, {best}): {'yes' if same else 'NO'}")
    print(
        f"  untimed warm-up, 2,000 rows (first call in the process): "
        f"bare {warm['bare']:.2f} s, flow {warm['flow']:.2f} s"
    )
    return {
        "training_rows": len(split.train),
        "features": len(FEATURES),
        "rounds": rounds,
        "seconds": times,
        "median_s": med,
        "ratio_task_over_bare": med["task"] / med["bare"],
        "ratio_flow_over_bare": med["flow"] / med["bare"],
        "same_model": same,
        "warmup_s": warm,
    }


def torch_comparison(
    split: Split, rows: int, epochs: int, batch_size: int, repeats: int
) -> dict[str, object]:
    def samples_per_s(backend: str, n: int, cycle_ms: float | None = None) -> float:
        params = TorchParams(
            backend=backend,  # type: ignore[arg-type]
            processes=n,
            epochs=epochs,
            batch_size=batch_size,
            hidden=[256, 128],
            threads_per_process=1,
            horovod_cycle_time_ms=cycle_ms,
        )
        train, valid = split.train.iloc[:rows], split.valid.iloc[:20_000]
        trained = train_torch(train, valid, FEATURES, CATEGORICAL, "y", params, seed=0)
        return trained.metrics["samples_per_s"]

    configs = {  # processes=1 trains in process: no launcher, no Horovod
        "1 process": ("horovod", 1, None),
        "horovod x2": ("horovod", 2, None),
        "horovod x2, 1 ms cycle": ("horovod", 2, 1.0),
        "torch.distributed x2": ("torch_distributed", 2, None),
    }
    runs: dict[str, list[float]] = {name: [] for name in configs}
    with progress("PyTorch configurations, alternating", repeats * len(configs)) as bar:
        for _ in range(repeats):  # interleaved: every configuration sees the same machine state
            for name, config in configs.items():
                runs[name].append(samples_per_s(*config))
                bar.advance()
    sps = {name: statistics.median(values) for name, values in runs.items()}
    one, two = sps["1 process"], sps["horovod x2"]
    slow, ddp = sps["horovod x2, 1 ms cycle"], sps["torch.distributed x2"]
    print(
        f"PyTorch MLP, {rows:,} rows, batch {batch_size} per worker, {epochs} epochs, CPU, "
        f"one thread per worker, configurations alternating, median of {repeats} (samples/s):"
    )
    print(
        f"  (b) 1 process (in process, no Horovod): {one:10,.0f}   horovod x2 (Gloo, 5 ms cycle): "
        f"{two:10,.0f}   scaling efficiency {two / (2 * one):.2f}  (target >= 0.8)"
    )
    print(
        f"      horovod x2 at Horovod's default 1 ms cycle: {slow:10,.0f}   "
        f"scaling efficiency {slow / (2 * one):.2f}"
    )
    print(
        f"  (c) torch.distributed x2 (torchrun, Gloo): {ddp:10,.0f}   "
        f"horovod x2 / torch.distributed x2: {two / ddp:.2f}"
    )
    return {
        "rows": rows,
        "epochs": epochs,
        "batch_size": batch_size,
        "samples_per_s": runs,
        "median_samples_per_s": sps,
        "scaling_efficiency": two / (2 * one),
        "scaling_efficiency_1ms_cycle": slow / (2 * one),
        "horovod_over_torch_distributed": two / ddp,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--torch-rows", dest="torch_rows", type=int, default=200_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", dest="batch_size", type=int, default=8192)
    add_json_arg(parser, "train")
    args = parser.parse_args()
    split = time_split(frame(args.rows), "ts")
    # one API for all of (a), up before its warm-up; the server's telemetry off, as its
    # heartbeat fails on the temporary SQLite database while flows write to it
    with temporary_settings({PREFECT_SERVER_ANALYTICS_ENABLED: False}), prefect_test_harness():
        lightgbm = lightgbm_comparison(split, args.rounds, args.repeats)
    torch = torch_comparison(split, args.torch_rows, args.epochs, args.batch_size, args.repeats)
    write_json(args.json, "train", args, {"lightgbm": lightgbm, "torch": torch})


if __name__ == "__main__":
    main()
