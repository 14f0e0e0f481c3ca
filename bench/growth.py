"""Benchmark: how time and memory grow with the input, per stage (README, "When one machine is
not enough").

Each measurement runs in a fresh process (after one untimed run of the smallest size); its
peak memory is the largest sum of the resident
memory of that process and all its children (Dask workers, predictors, nginx), sampled every
0.2 s. What is timed:

- data_prep: `plan_sources` + `build_features` (read, pandera validation, quarantine, every
  transform, the Parquet writes, the stats) on the embedded LocalCluster as the `DaskCluster`
  block's defaults start it (2 workers x 1 thread, 4 GiB each), for 5M, 20M and 50M generated
  transactions (generated once into `--work`, outside the timing; files of 500,000 rows).
- training: the training flow's LightGBM fit (`tasks.training.trainers.fit_lightgbm`: datasets,
  200 rounds with the validation set, the model as text, the predictor) on bench/train's frame
  (20 numeric + 2 categorical features), 250k to 2M rows, 70/15/15 by time.
- monitoring: one drift check (`check_window`: the tabular feature detector and the score
  detector) of windows of 1k to 1M rows against a 5,000-row reference.
- serving: `bench/serve` with gunicorn workers 1, 2, 4 per predictor (2 threads each); its wrk
  rounds (8 connections, 1 entity row per request) through nginx (setup (e)) and the bare
  Seldon wrapper (b).

    python -m bench.growth                                  # every stage, about 25 minutes
    python -m bench.growth --stages training,monitoring --training 50000,100000 --windows 1000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from bench.results import add_json_arg, write_json

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("data_prep", "training", "monitoring", "serving")


def measured(
    command: list[str], timeout: float = 3_600, parse: bool = True
) -> tuple[dict[str, Any], float]:
    """Run `command`; its last stdout line as JSON (with `parse`), and the peak RSS (GiB) of
    its process tree."""
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                tree = [root, *root.children(recursive=True)]
                total = 0
                for p in tree:
                    with contextlib.suppress(psutil.Error):
                        total += p.memory_info().rss
                peak[0] = max(peak[0], total)
            except psutil.Error:
                return
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        done.set()
        sampler.join(5)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{err.decode()[-4000:]}")
    result = json.loads(out.decode().strip().splitlines()[-1]) if parse else {}
    return result, peak[0] / 2**30


def child(stage: str, size: int, work: Path) -> dict[str, Any]:
    """One measurement, in this (fresh) process."""
    if stage == "data_prep":
        return _data_prep(size, work)
    if stage == "training":
        return _training(size)
    if stage == "monitoring":
        return _monitoring(size)
    raise ValueError(stage)


def _data_prep(transactions: int, work: Path) -> dict[str, Any]:
    import pandas as pd
    from distributed import Client

    from blocks import DaskCluster
    from blocks.dask_cluster import local_cluster
    from features.credit_risk.generator import generate_demo
    from tasks.data.preprocess import build_features, plan_sources
    from tasks.specs.dataset_spec import GenerateOptions
    from tasks.specs.datasets import get_dataset

    spec = get_dataset("credit_risk")
    raw = work / f"raw-{transactions}"
    if not (raw / "done").is_file():  # as bench/preprocess generates its data
        options = GenerateOptions(rows=transactions, seed=0, chunk_rows=500_000, dirty_rate=0.001)
        generate_demo(str(raw), options)
        (raw / "done").write_text("")
    out = Path(tempfile.mkdtemp(prefix="prep-", dir=work))
    try:
        with local_cluster(**DaskCluster().local_kwargs()) as cluster, Client(cluster):
            start = time.perf_counter()
            plan = plan_sources(spec, str(raw))
            report = build_features(spec, plan, str(out), pd.Timestamp.now(tz="UTC"))
            seconds = time.perf_counter() - start
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {"seconds": seconds, "rows_in": report.rows_in}


def _training(rows: int) -> dict[str, Any]:
    from bench.train import CATEGORICAL, FEATURES, frame
    from tasks.training.lightgbm_trainer import LightGBMParams
    from tasks.training.trainers import TrainingInputs, fit_lightgbm
    from tasks.training.training_set import Split

    data = frame(rows)
    a, b = int(rows * 0.7), int(rows * 0.85)
    split = Split(data.iloc[:a], data.iloc[a:b], data.iloc[b:])
    params = LightGBMParams(num_boost_round=200, early_stopping_rounds=201)
    start = time.perf_counter()
    fit_lightgbm(TrainingInputs(split, FEATURES, CATEGORICAL, "y", seed=0), params)
    return {"seconds": time.perf_counter() - start}


def _monitoring(window_rows: int) -> dict[str, Any]:
    import numpy as np

    from bench.train import CATEGORICAL, FEATURES, frame
    from tasks.monitoring.detectors import (
        SCORE,
        check_window,
        fit_detector_files,
        load_detectors,
        read_files,
    )

    reference = frame(5_000, seed=1)
    scores = np.random.default_rng(1).random(5_000)
    detectors = load_detectors(
        read_files(fit_detector_files(reference, scores, FEATURES, CATEGORICAL))
    )
    window = frame(window_rows, seed=2)
    window[SCORE] = np.random.default_rng(2).random(window_rows)
    start = time.perf_counter()
    check_window(detectors, window, 0.05, "", "")
    return {"seconds": time.perf_counter() - start}


def _serving(workers: int, work: Path) -> tuple[dict[str, Any], float]:
    out = work / f"serve-{workers}.json"
    command = [sys.executable, "-m", "bench.serve", "--workers", str(workers), "--requests", "100"]
    command += ["--warmup", "10", "--wrk-seconds", "15", "--wrk-rounds", "1"]
    command += ["--batch-repeats", "0", "--json", str(out), "--work", str(work / "serve")]
    _, peak = measured(command, timeout=1_800, parse=False)
    wrk = json.loads(out.read_text())["figures"]["wrk"]
    keep = ("requests_per_s", "p50_ms", "p99_ms", "errors")
    return {name: {k: wrk[name][k] for k in keep} for name in ("b", "e")}, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--data-prep", default="5000000,20000000,50000000")
    parser.add_argument("--training", default="250000,500000,1000000,2000000")
    parser.add_argument("--windows", default="1000,10000,100000,1000000")
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--work", default=None, help="kept (generated data reused) if given")
    parser.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    add_json_arg(parser, "growth")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-growth-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), work)))
        return
    sizes = {
        "data_prep": args.data_prep,
        "training": args.training,
        "monitoring": args.windows,
        "serving": args.workers,
    }
    figures: dict[str, Any] = {}
    for stage in args.stages.split(","):
        figures[stage] = {}
        if stage != "serving":  # one untimed run first: imports and files from a cold cache
            first = sizes[stage].split(",")[0]
            measured(
                [sys.executable, "-m", "bench.growth", "--child", stage, first, "--work", str(work)]
            )
        for size in (int(n) for n in sizes[stage].split(",")):
            if stage == "serving":
                result, peak = _serving(size, work)
            else:
                command = [sys.executable, "-m", "bench.growth", "--child", stage, str(size)]
                result, peak = measured([*command, "--work", str(work)])
            figures[stage][size] = {**result, "peak_rss_gib": peak}
            print(stage, f"{size:,}", json.dumps(figures[stage][size]), flush=True)
    report(figures)
    write_json(args.json, "growth", args, figures)


def report(figures: dict[str, Any]) -> None:
    labels = {
        "data_prep": "transactions",
        "training": "training rows",
        "monitoring": "window rows",
        "serving": "gunicorn workers",
    }
    for stage, runs in figures.items():
        print(f"{stage} ({labels[stage]}):")
        first = min(runs)
        for size, r in sorted(runs.items()):
            if stage == "serving":
                e, b = r["e"], r["b"]
                print(
                    f"  {size:>12,}: through nginx {e['requests_per_s']:7.0f} req/s, p99 "
                    f"{e['p99_ms']:.1f} ms, {e['errors']} errors; bare wrapper "
                    f"{b['requests_per_s']:7.0f} req/s; peak {r['peak_rss_gib']:.2f} GiB"
                )
            else:
                scale = r["seconds"] / runs[first]["seconds"] / (size / first)
                print(
                    f"  {size:>12,}: {r['seconds']:8.2f} s  peak {r['peak_rss_gib']:6.2f} GiB  "
                    f"(time per row x{scale:.2f} of the smallest)"
                )


if __name__ == "__main__":
    main()
