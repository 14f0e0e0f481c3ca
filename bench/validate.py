"""Benchmark: the validation flow on a 200k-row test set, against training the same model.

Credit-risk data is generated and prepared (Feast offline store, local files), then, under a
temporary Prefect server: a champion is trained and aliased, a candidate is trained (timed:
the training flow, Feast retrieval included), and the validation flow compares the candidate
with the champion on the newest `--test-rows` labelled rows (timed, with the process's peak
RSS sampled every 20 ms). Printed: validation / training and explanations / training.
Target: the whole validation, explanations included, under half the training time.

    python -m bench.validate      # about 7 minutes on 2 cores (data included), 15 GiB peak
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
from prefect.testing.utilities import prefect_test_harness

from bench.features import SERVICE, prepare
from blocks import FeatureRepo, ModelRegistry
from flows.training import TrainingParams, training
from flows.validation import ValidationParams, validation
from tasks.feature_store.store import apply_definitions, open_store
from tasks.specs.datasets import model_name

ROOT = Path(__file__).resolve().parents[1]


def peak_rss(fn: Callable[[], Any]) -> tuple[Any, float, float, float]:
    """Run `fn`; its result, seconds, and the process RSS before and at peak (GiB)."""
    process = psutil.Process()
    before = process.memory_info().rss
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], process.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    try:
        result = fn()
    finally:
        seconds = time.perf_counter() - started
        done.set()
        sampler.join()
    return result, seconds, before / 2**30, peak[0] / 2**30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transactions", type=int, default=67_000_000)
    parser.add_argument("--test-rows", dest="test_rows", type=int, default=200_000)
    parser.add_argument("--work", default=None, help="Reuse prepared data from an earlier run.")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-validate-"))
    started = time.perf_counter()
    spec, features = prepare(work, args.transactions)
    labels = len(pd.read_parquet(features / "labels", columns=[spec.timestamp_field]))
    print(
        f"data: {args.transactions:,} transactions, {labels:,} labelled applications "
        f"({time.perf_counter() - started:.0f} s to generate and prepare)"
    )
    test_share = args.test_rows / labels
    if not 0.05 < test_share < 0.6:
        raise SystemExit(f"--test-rows {args.test_rows} is {test_share:.0%} of the labels")

    repo = FeatureRepo(
        repo_path=str(ROOT / "features"),
        registry_path=str(work / "feast" / "registry.db"),
        sqlite_path=str(work / "feast" / "online.db"),
    )
    apply_definitions(open_store(repo.settings()), spec, str(features))
    common: dict[str, Any] = {
        "data_uri": str(features.parent),
        "feature_repo_block": "bench-feast",
        "registry_block": "bench-registry",
    }
    with prefect_test_harness(server_startup_timeout=120):
        repo.save("bench-feast", overwrite=True)
        ModelRegistry(root_uri=str(work / f"registry-{time.time_ns()}")).save(
            "bench-registry", overwrite=True
        )
        name = model_name(SERVICE)
        train = TrainingParams(test_share=test_share, valid_share=0.1, **common)
        champion = training(train)
        ModelRegistry.load("bench-registry").registry().set_alias(name, "champion", 1)
        candidate, train_s, _, train_peak = peak_rss(
            lambda: training(train.model_copy(update={"seed": 1}))
        )
        result, validate_s, before, peak = peak_rss(
            lambda: validation(ValidationParams(model_name=name, **common))
        )
        registry = ModelRegistry.load("bench-registry").registry()
        evidence = json.loads(
            registry.read_record(name, 2, "validation", result.record, "evidence.json")
        )
    explain_s = evidence["explain_seconds"]
    print(
        f"champion v1 test AUC {champion.metrics['test_auc']:.4f}, candidate v2 "
        f"{candidate.metrics['test_auc']:.4f}; decision: {result.decision} {result.failed_gates}"
    )
    print(
        f"test set: {evidence['data']['test_rows']:,} rows; candidate trained on "
        f"{registry.get(name, 2).metadata['data']['train']['rows']:,} rows"
    )
    print(f"training flow (candidate):   {train_s:7.2f} s   peak RSS {train_peak:.2f} GiB")
    print(
        f"validation flow:             {validate_s:7.2f} s   peak RSS {peak:.2f} GiB "
        f"(+{peak - before:.2f} GiB over the {before:.2f} GiB before it)"
    )
    print(
        f"  of which explanations:     {explain_s:7.2f} s   "
        f"(EBM fit {evidence['glass_box']['fit_seconds']:.2f} s)"
    )
    print(f"explanations / training: {explain_s / train_s:.3f}")
    print(f"validation / training:   {validate_s / train_s:.3f}  (target < 0.5)")


if __name__ == "__main__":
    main()
