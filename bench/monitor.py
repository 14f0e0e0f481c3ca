"""Benchmark: drift monitoring: the registered detectors' power and false alarms, what a check
costs, and how long a drift event takes to start a flow run on a worker.

1. Detector power. The generator's credit-risk data (`--transactions` card transactions over
   900 days up to yesterday, seed `--seed`) is written once undrifted (the baseline) and once per
   scenario with a drift mode on from `drift_start` = yesterday - 300 days: the same customers
   and events, so every row before `drift_start` is the baseline's. Each dataset goes through
   the data_prep flow (its own output folder and Feast registry and online store, Dask on one
   in-process worker with 2 threads) inside `prefect_test_harness()`; the training flow (its
   defaults: LightGBM, Platt calibration, 5,000 reference rows) trains on the baseline and
   registers the version in a temporary registry, whose training split ends before
   `drift_start` (checked and printed). Point-in-time feature rows are each dataset's labelled
   applications with the feature service's features (`load_labelled_set`, as training reads
   them), scored with the registered version (`load_model(...).predict`).
   The detectors are the version's registered files (`load_detectors`); they are fitted once
   more with `fit_detector_files` on the version's reference sample (and the registered score
   reference: the test split's scores, which the registry does not keep apart), as
   registration does, and must be the same. For each window size: `--windows` windows of
   rows drawn without replacement from
   - undrifted: baseline rows before `drift_start` that are not in the reference sample (matched
     on every feature and the label): the false-alarm rate;
   - drifted: a scenario's rows at or after `drift_start`: the detection rate;
   each checked by `check_window(detectors, window, p_value=0.05)` (the policy's default: a
   window alarms if the feature detector (KS/Chi-squared per watched feature,
   Benjamini-Hochberg) or the score detector (KS) fires, each at 0.025). Rates come with 95%
   Wilson intervals, which assume independent windows: windows of one pool overlap more as
   they grow (5,000 rows of a pool of ~10,000 share about half their rows), so the largest
   size's intervals are too narrow. Also printed: the share of a scenario's post-drift rows
   whose watched features differ from the baseline's same rows (the drift's reach).
   Scenarios, at the generator's default strength (1.0): the default covariate drift
   `covariate_drift=("loan_amount",)` (loans 1.6x), then `("missed_payments_12m",)`,
   `("amount",)`, `("annual_income",)` and `concept_drift=True` (only the label's rule changes,
   so no covariate detection is expected: its alarms should match the false-alarm rate).
2. Cost. One `check_window` on a 10,000-row window against `LoadedModel.predict` of the same
   10,000 rows, alternating, median of `--cost-reps` after one untimed call each. Reading the
   request log: `--log-records` 1-row prediction records written by `SegmentWriter` as the model
   server writes them (features form: every model feature, its score, ids, version, role,
   latency), then `read_log`, `read_traffic` (the records since an empty watermark) and
   `check_model` (a whole monitoring pass: traffic, one `check_window` per 1,000-row window,
   live accuracy with no labels logged) timed, rows/s.
3. Latency from `emit_event` to the triggered flow run Running on a worker: a real
   `prefect server start` (SQLite, temporary PREFECT_HOME, loopback port), a process work pool,
   the `triggered` flow below deployed from code (`from_source(...).deploy(...)`) with the
   trigger of prefect.yaml's retrain-on-drift (reactive, threshold 1, within 3600 s, for_each
   prefect.resource.id, match prefect.resource.id "mlops.model.*", expect
   mlops.model.drift-detected, retraining's parameters templated from the event), a worker per
   `--query-seconds` setting, `--latency-reps` events each with a fresh resource id (so the
   debounce never swallows one), each after a random wait in [0, query seconds) so the event
   falls anywhere in the worker's polling cycle. Every figure is a difference of server-side
   or same-machine stamps: the event's `occurred` (set by emit_event) and `received` (the
   server's events API), the flow run's `created`, its Pending and Running states.

Targets are printed beside the figures, never asserted.

    python -m bench.monitor            # 1.5M transactions per dataset, 100 windows, 5 events
    python -m bench.monitor --quick    # 400k transactions, 20 windows, 2 events (~2 min)
    python -m bench.monitor --parts latency --work /tmp/m   # one part; --work keeps the data
"""

# This module is also the entrypoint of part 3's deployment: a worker's flow run loads it as a
# script with bench/ first on sys.path, where bench/features.py would shadow the project's
# `features` package. So at module level it imports only the standard library, numpy, pandas,
# Prefect and bench.results, and the project's modules inside the functions that use them.

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import flow

from bench.results import add_json_arg, write_json
from tasks.progress import progress

ROOT = Path(__file__).resolve().parents[1]
MODEL = "bench-monitor"
SERVICE = "credit_risk_default_v1"
SPAN_DAYS = 900
DRIFT_DAYS_BEFORE_END = 300
P_VALUE = 0.05  # MonitoringPolicy's default
SCORE = "score"  # tasks.monitoring.detectors.SCORE: the column check_window reads
DEFAULT = "loan_amount"
SCENARIOS: dict[str, dict[str, Any]] = {
    "loan_amount": {"covariate_drift": ("loan_amount",)},
    "missed_payments_12m": {"covariate_drift": ("missed_payments_12m",)},
    "amount": {"covariate_drift": ("amount",)},
    "annual_income": {"covariate_drift": ("annual_income",)},
    "concept": {"concept_drift": True},
}
# what each mode does at the generator's default strength (1.0), features/credit_risk/generator.py
DEFINITIONS = {
    "loan_amount": "covariate_drift=('loan_amount',): applications from drift_start ask "
    "1.6x the loan amount (the default covariate drift)",
    "missed_payments_12m": "covariate_drift=('missed_payments_12m',): applications from "
    "drift_start add Poisson(1.5) missed payments",
    "amount": "covariate_drift=('amount',): card transactions from drift_start spend 1.8x "
    "(reaches the watched amount_sum_30d)",
    "annual_income": "covariate_drift=('annual_income',): customers signing up from "
    "drift_start earn 0.65x (only their applications, >= 90 days after signup, change)",
    "concept": "concept_drift=True: the label's rule changes from drift_start, no feature "
    "moves (expected: no covariate detection, alarms at the false-alarm rate)",
}
SEGMENTS = {
    "emit_to_received": "emit_event -> server received the event",
    "received_to_created": "received -> flow run created (automation: triggers + actions)",
    "created_to_pending": "created (Scheduled) -> Pending (worker's poll picked it up)",
    "pending_to_running": "Pending -> Running (process start, flow load, engine)",
    "emit_to_running": "emit_event -> Running, in all",
}
LATENCY_TARGET_S = 30.0
# prefect.yaml's `retraining_parameters` (*from_event). The event id as text: a lone
# "{{ event.id }}" keeps its type, a UUID, which the server's `tojson` cannot serialize, and the
# action fails ("Unable to create flow run from deployment: InvalidJinja()", prefect 3.9.1)
FROM_EVENT = {
    "params": {
        "resource_id": "{{ event.resource.id }}",
        "event_id": "{{ event.id|string }}",
        "event_name": "{{ event.event }}",
        "payload": "{{ event.payload }}",
    }
}


@flow(name="bench-monitor-triggered")
def triggered(params: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Part 3's deployment: started by a drift event with retraining's parameters (the
    event's resource, id, name and payload), it only starts and returns them."""
    return params


# -- part 1: detector power -----------------------------------------------------------------


@dataclass
class Prepared:
    """The datasets' labelled point-in-time rows, the registered version and its detectors."""

    frames: dict[str, pd.DataFrame]  # dataset -> labelled rows, features and the version's score
    reference: pd.DataFrame
    model: Any  # deployments.predictor.LoadedModel
    detectors: Any  # tasks.monitoring.detectors.Detectors
    version: int
    metadata: dict[str, Any]
    drift_start: date
    timestamp: str
    label: str
    setup_s: dict[str, float]
    refit_identical: bool


Say = Callable[[str], None]


@contextlib.contextmanager
def output_to(path: Path) -> Iterator[Say]:
    """Send this process's stdout and stderr, at the file descriptors (flow and Dask logs,
    Feast's progress bars, the servers the harness starts), to `path`; yields a print to the
    terminal. On an error the log's tail is printed before it propagates."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with path.open("ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    terminal = os.fdopen(os.dup(saved[0]), "w")
    failed = False
    try:
        yield lambda line: print(line, file=terminal, flush=True)
    except BaseException:
        failed = True
        raise
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        terminal.close()
        if failed:
            tail = path.read_text(errors="replace").splitlines()[-40:]
            print(f"--- the last lines of {path}:", *tail, sep="\n", file=sys.stderr)


def block_name(dataset: str) -> str:
    return "bench-" + dataset.replace("_", "-")


def prepare(args: argparse.Namespace, work: Path, datasets: list[str], say: Say) -> Prepared:
    """Generate and data_prep each dataset, train on the baseline (in a Prefect test
    harness), then read the labelled point-in-time rows back and score them."""
    from prefect.testing.utilities import prefect_test_harness

    from blocks import DaskCluster, FeatureRepo, ModelRegistry
    from deployments.predictor import REFERENCE
    from flows.data_prep import DataPrepParams, data_prep
    from flows.generate_data import GenerateDataParams, generate_data
    from flows.training import TrainingParams, training
    from tasks.data.publish import current_snapshot
    from tasks.monitoring.detectors import fit_detector_files, load_detectors, read_files
    from tasks.registry.loading import load_model
    from tasks.specs.datasets import get_dataset
    from tasks.training.training_set import load_labelled_set

    spec = get_dataset("credit_risk")
    end = date.today() - timedelta(days=1)
    drift_start = end - timedelta(days=DRIFT_DAYS_BEFORE_END)
    setup: dict[str, float] = {}
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # the harness's server
    with prefect_test_harness(server_startup_timeout=120):
        DaskCluster(processes=False, n_workers=1, threads_per_worker=2, memory_limit="6GiB").save(
            "bench-threads", overwrite=True
        )
        ModelRegistry(root_uri=str(work / "registry")).save("bench-registry", overwrite=True)
        for name in datasets:
            folder = work / name
            FeatureRepo(
                repo_path=str(ROOT / "features"),
                registry_path=str(folder / "feast" / "registry.db"),
                sqlite_path=str(folder / "feast" / "online.db"),
            ).save(block_name(name), overwrite=True)
            began = time.perf_counter()
            reused = current_snapshot(str(folder / "out")) is not None  # a kept --work's
            if not reused:
                drift = SCENARIOS.get(name, {})
                generate_data(
                    GenerateDataParams(
                        rows=args.transactions,
                        seed=args.seed,
                        start=end - timedelta(days=SPAN_DAYS),
                        end=end,
                        out_uri=str(folder / "raw"),
                        chunk_rows=500_000,
                        **({"drift_start": drift_start, **drift} if drift else {}),
                    )
                )
                data_prep(
                    DataPrepParams(
                        source_uri=str(folder / "raw"),
                        output_uri=str(folder / "out"),
                        dask_cluster_block="bench-threads",
                        feature_repo_block=block_name(name),
                    )
                )
            setup[f"data_{name}"] = time.perf_counter() - began
            done = (
                "reused"
                if reused
                else f"generated and through data_prep in {setup[f'data_{name}']:.1f} s"
            )
            say(f"  {name}: {done}")
        registry = ModelRegistry.load("bench-registry").registry()
        began = time.perf_counter()
        trained = not registry.versions(MODEL)  # a kept --work keeps its version
        if trained:
            training(
                TrainingParams(
                    data_uri=str(work / "baseline" / "out"),
                    model_name=MODEL,
                    feature_repo_block=block_name("baseline"),
                    registry_block="bench-registry",
                )
            )
        setup["training"] = time.perf_counter() - began
        if trained:
            say(f"  baseline: trained and registered in {setup['training']:.1f} s")
        settings = {n: FeatureRepo.load(block_name(n)).settings() for n in datasets}

    info = registry.versions(MODEL)[-1]
    version = info.version
    model = load_model(registry, MODEL, version)
    detectors = load_detectors(lambda f: registry.read(MODEL, version, f))
    reference = pd.read_parquet(io.BytesIO(registry.read(MODEL, version, REFERENCE)))
    # registration's own fit, once more: the registered detectors must be exactly these
    refit = load_detectors(
        read_files(
            fit_detector_files(
                reference,
                detectors.score_ref,  # registration's: the test split's scores (not kept apart)
                detectors.features,
                info.metadata.get("categorical", []),
            )
        )
    )
    refit_identical = bool(
        np.array_equal(refit.x_ref, detectors.x_ref)
        and np.array_equal(refit.score_ref, detectors.score_ref)
        and refit.features == detectors.features
        and refit.categorical == detectors.categorical
    )
    began = time.perf_counter()
    frames: dict[str, pd.DataFrame] = {}
    for name in datasets:
        data = load_labelled_set(spec, str(work / name / "out"), settings[name], SERVICE)
        frame = data.frame.reset_index(drop=True)
        frame[SCORE] = model.predict(frame)
        frames[name] = frame
    setup["point_in_time_rows_and_scores"] = time.perf_counter() - began
    return Prepared(
        frames=frames,
        reference=reference,
        model=model,
        detectors=detectors,
        version=version,
        metadata=info.metadata,
        drift_start=drift_start,
        timestamp=spec.timestamp_field,
        label=spec.label.column,
        setup_s=setup,
        refit_identical=refit_identical,
    )


def row_keys(frame: pd.DataFrame, columns: list[str]) -> pd.Series:
    """One hash per row over `columns` (NaN hashes alike), to match rows by value."""
    return pd.util.hash_pandas_object(frame[columns], index=False)


def changed_rows(
    frame: pd.DataFrame, base: pd.DataFrame, keys: list[str], columns: list[str]
) -> tuple[np.ndarray, int]:
    """Per row of `frame`, whether a value of `columns` differs from `base`'s row of the same
    keys (beyond 1e-6: data_prep's rolling sums differ in the last bits between two datasets
    that differ later); and how many of `frame`'s rows `base` lacks (counted as changed)."""
    paired = frame[[*keys, *columns]].merge(
        base[[*keys, *columns]], on=keys, how="left", suffixes=("", "_base"), indicator=True
    )
    missing = paired["_merge"].to_numpy() != "both"
    changed = missing.copy()
    for c in columns:
        a, b = paired[c].to_numpy("float64"), paired[f"{c}_base"].to_numpy("float64")
        changed |= ~(np.isclose(a, b, rtol=1e-9, atol=1e-6) | (np.isnan(a) & np.isnan(b)))
    return changed, int(missing.sum())


def pools(prep: Prepared) -> tuple[pd.DataFrame, dict[str, pd.DataFrame], dict[str, Any]]:
    """The undrifted pool (baseline rows before drift_start, the reference sample taken out)
    and each scenario's drifted pool (its rows from drift_start on), with checks on them."""
    ts, start = prep.timestamp, pd.Timestamp(prep.drift_start, tz="UTC")
    base = prep.frames["baseline"]
    columns = [*prep.model.features, prep.label]
    in_reference = row_keys(base, columns).isin(set(row_keys(prep.reference, columns)))
    before = base[ts] < start
    undrifted = base[before & ~in_reference].reset_index(drop=True)
    checks: dict[str, Any] = {
        "baseline_rows": len(base),
        "before_drift_start": int(before.sum()),
        "reference_rows": len(prep.reference),
        "reference_rows_found_before_drift_start": int((before & in_reference).sum()),
        "undrifted_pool": len(undrifted),
        "undrifted_from": str(undrifted[ts].min()),
        "undrifted_to": str(undrifted[ts].max()),
        "train_to": prep.metadata["split"]["train_to"],
        "train_split_before_drift_start": pd.Timestamp(prep.metadata["split"]["train_to"]) < start,
        "scenarios": {},
    }
    keys = ["customer_id", ts]
    drifted: dict[str, pd.DataFrame] = {}
    for name in SCENARIOS:
        if name not in prep.frames:
            continue
        frame = prep.frames[name]
        after = frame[ts] >= start
        drifted[name] = frame[after].reset_index(drop=True)
        # the same customers and events: every row before drift_start is the baseline's
        earlier, unmatched = changed_rows(frame[~after], base[before], keys, columns)
        later, _ = changed_rows(drifted[name], base[~before], keys, prep.detectors.features)
        checks["scenarios"][name] = {
            "drifted_pool": len(drifted[name]),
            "rows_before": int((~after).sum()),
            "rows_before_differing_from_baseline": int(earlier.sum()),
            "rows_before_not_in_baseline": unmatched,
            "post_drift_rows_with_a_watched_feature_changed": float(later.mean()),
        }
    return undrifted, drifted, checks


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson interval of a rate k/n."""
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def window_rates(
    detectors: Any, pool: pd.DataFrame, size: int, n: int, seed: list[int], ts: str
) -> dict[str, Any] | None:
    """`n` windows of `size` rows drawn without replacement from `pool`, each checked; the
    share that alarmed (and by which detector, and which features). None if the pool is
    smaller than a window."""
    from tasks.monitoring.detectors import check_window

    if len(pool) < size:
        return None
    rng = np.random.default_rng(seed)
    alarms, by_features, by_score = 0, 0, 0
    flagged: Counter[str] = Counter()
    seconds = []
    with progress(f"windows of {size:,} rows", n) as bar:
        for _ in range(n):
            window = pool.iloc[np.sort(rng.choice(len(pool), size, replace=False))]
            began = time.perf_counter()
            check = check_window(
                detectors, window, P_VALUE, str(window[ts].min()), str(window[ts].max())
            )
            seconds.append(time.perf_counter() - began)
            alarms += check.drift
            by_features += bool(check.drifted_features)
            by_score += check.score_drifted
            flagged.update(check.drifted_features)
            bar.advance()
    low, high = wilson(alarms, n)
    return {
        "windows": n,
        "size": size,
        "pool": len(pool),
        "alarms": alarms,
        "rate": alarms / n,
        "ci95": [low, high],
        "by_feature_detector": by_features,
        "by_score_detector": by_score,
        "features_flagged": dict(flagged.most_common()),
        "check_window_median_ms": statistics.median(seconds) * 1000,
    }


def power(prep: Prepared, args: argparse.Namespace) -> dict[str, Any]:
    undrifted, drifted, checks = pools(prep)
    ts = prep.timestamp
    results: dict[str, dict[str, Any]] = {"undrifted": {}}
    for size in args.sizes:
        results["undrifted"][str(size)] = window_rates(
            prep.detectors, undrifted, size, args.windows, [args.seed, 0, size], ts
        )
    for i, (name, pool) in enumerate(drifted.items(), start=1):
        results[name] = {
            str(size): window_rates(
                prep.detectors, pool, size, args.windows, [args.seed, i, size], ts
            )
            for size in args.sizes
        }
    return {"checks": checks, "rates": results}


def report_power(prep: Prepared, figures: dict[str, Any], args: argparse.Namespace) -> list:
    checks, rates = figures["checks"], figures["rates"]
    meta = prep.metadata
    print(
        f"\n1. detector power: {MODEL} v{prep.version} (trained on the baseline: "
        f"{meta['data']['train']['rows']:,} train rows to {checks['train_to'][:10]}, test AUC "
        f"{meta['metrics']['test_auc']:.3f}); drift_start {prep.drift_start} "
        f"(train split before it: {checks['train_split_before_drift_start']})"
    )
    det = prep.detectors
    print(
        f"   detectors: the version's registered files (load_detectors); refitted with "
        f"fit_detector_files on its {len(prep.reference):,} reference rows (and its registered "
        f"out-of-sample score reference): identical {prep.refit_identical}"
    )
    print(
        f"   watched features: {', '.join(det.features)}; + the score (KSDrift); "
        f"check_window p_value={P_VALUE} (0.025 per detector)"
    )
    print(
        f"   undrifted pool: {checks['undrifted_pool']:,} baseline rows before drift_start "
        f"({checks['undrifted_from'][:10]} .. {checks['undrifted_to'][:10]}), the "
        f"{checks['reference_rows_found_before_drift_start']:,} reference rows taken out"
    )
    print("   scenarios (generator default strength 1.0):")
    for name in rates:
        if name == "undrifted":
            continue
        s = checks["scenarios"][name]
        print(f"     {name:<20} {DEFINITIONS[name]}")
        print(
            f"     {'':<20} pool {s['drifted_pool']:,} rows from drift_start on; "
            f"{s['post_drift_rows_with_a_watched_feature_changed']:.1%} of them have a watched "
            f"feature changed vs the baseline's same rows; rows before drift_start that differ "
            f"from the baseline's: {s['rows_before_differing_from_baseline']} of "
            f"{s['rows_before']:,}"
        )
    print(
        f"   alarm rate over {args.windows} windows per cell, rows drawn without replacement "
        "(95% Wilson interval; [f s]: windows the feature / score detector fired on):"
    )
    header = "".join(f"{f'{size:,} rows':>30}" for size in args.sizes)
    print(f"     {'windows from':<22}{header}")
    for name, by_size in rates.items():
        label = "undrifted (false alarms)" if name == "undrifted" else name
        cells = []
        for size in args.sizes:
            r = by_size[str(size)]
            if r is None:
                cells.append(f"{'pool < window: skipped':>30}")
                continue
            low, high = r["ci95"]
            cells.append(
                f"{r['rate']:>7.1%} [{low:5.1%},{high:6.1%}] "
                f"[{r['by_feature_detector']:>3} {r['by_score_detector']:>3}]"
            )
        print(f"     {label:<22}" + "".join(f"{c:>30}" for c in cells))
    shares = [
        f"{size:,} rows {r['size'] / r['pool']:.0%}"
        for size in args.sizes
        if (r := rates["undrifted"][str(size)]) is not None
    ]
    print(
        f"   a window's share of the undrifted pool: {', '.join(shares)}; the larger, the more "
        "a cell's windows overlap (the intervals assume independent windows)"
    )
    print("   features flagged most (count of windows), by scenario at the largest size run:")
    for name, by_size in rates.items():
        done = [by_size[str(s)] for s in args.sizes if by_size[str(s)] is not None]
        if done:
            top = list(done[-1]["features_flagged"].items())[:3]
            print(f"     {name:<22} {done[-1]['size']:,} rows: {top or 'none'}")
    targets = []
    one_k = rates[DEFAULT].get("1000") if DEFAULT in rates else None
    false_1k = rates["undrifted"].get("1000")
    if one_k is not None:
        targets.append(
            (
                f"detection at 1,000 rows, default covariate drift ({DEFAULT} x1.6)",
                f"{one_k['rate']:.1%}",
                ">= 95%",
                one_k["rate"] >= 0.95,
            )
        )
    if false_1k is not None:
        targets.append(
            (
                "false alarms at 1,000 rows",
                f"{false_1k['rate']:.1%}",
                "<= 5%",
                false_1k["rate"] <= 0.05,
            )
        )
    if "concept" in rates and rates["concept"].get("1000") is not None:
        concept = rates["concept"]["1000"]["rate"]
        targets.append(
            (
                "concept drift at 1,000 rows (no covariate change expected)",
                f"{concept:.1%}",
                "~ false-alarm rate",
                None,
            )
        )
    return targets


# -- part 2: cost ---------------------------------------------------------------------------


def alternate(fns: dict[str, Callable[[], Any]], reps: int) -> dict[str, list[float]]:
    """One untimed call each, then `reps` rounds calling each once, in turn; seconds."""
    for fn in fns.values():
        fn()
    seconds: dict[str, list[float]] = {name: [] for name in fns}
    with progress("cost rounds, alternating", reps * len(fns)) as bar:
        for _ in range(reps):
            for name, fn in fns.items():
                began = time.perf_counter()
                fn()
                seconds[name].append(time.perf_counter() - began)
                bar.advance()
    return seconds


def write_log(log_dir: Path, model: Any, rows: pd.DataFrame, records: int) -> dict[str, Any]:
    """`records` 1-row requests as deployments/model_server.py logs them (features form),
    their times spread over the hour before now; the rows cycle over `rows`."""
    from deployments.request_log import REQUESTS, SegmentWriter

    features = model.features
    values = rows[features].to_numpy("float64").tolist()
    scores = rows[SCORE].to_numpy("float64").tolist()
    writer = SegmentWriter(log_dir / REQUESTS, REQUESTS)
    now = datetime.now(UTC) - timedelta(seconds=5)
    step = timedelta(seconds=3600 / records)
    began = time.perf_counter()
    try:
        for i in range(records):
            row = values[i % len(values)]
            stamp = (now - (records - i) * step).isoformat(timespec="microseconds")
            writer.append(
                [
                    {
                        "request_id": uuid.uuid4().hex,
                        "time": stamp.replace("+00:00", "Z"),
                        "model": model.name,
                        "version": model.version,
                        "role": "main",
                        "form": "features",
                        "latency_ms": 1.234,
                        "row": 0,
                        "features": {
                            n: None if v != v else v for n, v in zip(features, row, strict=True)
                        },
                        "score": scores[i % len(scores)],
                    }
                ]
            )
    finally:
        writer.close()
    seconds = time.perf_counter() - began
    folder = log_dir / REQUESTS
    size = sum(p.stat().st_size for p in folder.iterdir())
    return {
        "records": records,
        "segments": len(list(folder.iterdir())),
        "bytes": size,
        "write_s": seconds,
    }


def cost(
    prep: Prepared, undrifted: pd.DataFrame, args: argparse.Namespace, work: Path
) -> dict[str, Any]:
    from deployments.request_log import REQUESTS, read_log
    from tasks.monitoring.check import check_model
    from tasks.monitoring.detectors import check_window
    from tasks.monitoring.policy import MonitoringPolicy
    from tasks.monitoring.traffic import Watermark, read_traffic

    base = prep.frames["baseline"]
    columns = [*prep.model.features, prep.label]
    outside = base[~row_keys(base, columns).isin(set(row_keys(prep.reference, columns)))]
    n = min(args.cost_rows, len(outside))
    window = outside.sample(n, random_state=args.seed).reset_index(drop=True)
    features = window[prep.model.features].copy()
    detectors, model = prep.detectors, prep.model
    seconds = alternate(
        {
            "check_window": lambda: check_window(detectors, window, P_VALUE, "", ""),
            "predict": lambda: model.predict(features),
        },
        args.cost_reps,
    )
    median = {k: statistics.median(v) for k, v in seconds.items()}
    check = {
        "rows": n,
        "reps": args.cost_reps,
        "seconds": seconds,
        "median_s": median,
        "ratio_check_over_predict": median["check_window"] / median["predict"],
    }

    log_dir = work / "request-log"
    shutil.rmtree(log_dir, ignore_errors=True)
    written = write_log(log_dir, model, undrifted, args.log_records)
    policy = MonitoringPolicy(settle_s=0.0)
    reads = alternate(
        {
            "read_log": lambda: read_log(log_dir / REQUESTS, REQUESTS),
            "read_traffic": lambda: read_traffic(log_dir, model.name, Watermark(), 0.0),
            "check_model": lambda: check_model(
                log_dir, model.name, Watermark(), policy, lambda v: detectors
            ),
        },
        args.read_reps,
    )
    got = read_traffic(log_dir, model.name, Watermark(), 0.0)
    passed = check_model(log_dir, model.name, Watermark(), policy, lambda v: detectors)
    read_median = {k: statistics.median(v) for k, v in reads.items()}
    log = {
        **written,
        "reps": args.read_reps,
        "records_read_by_read_traffic": sum(len(s.records) for s in got.streams),
        "windows_checked_by_check_model": len(passed.checks),
        "seconds": reads,
        "median_s": read_median,
        "records_per_s": {k: written["records"] / v for k, v in read_median.items()},
    }
    return {"check_vs_predict": check, "request_log": log}


def report_cost(figures: dict[str, Any]) -> list:
    c, log = figures["check_vs_predict"], figures["request_log"]
    print(
        f"\n2. cost: the same {c['rows']:,} baseline rows (undrifted, not in the reference "
        f"sample), alternating, median of {c['reps']} after one untimed call each:"
    )
    labels = {
        "check_window": "check_window (both detectors, p_value 0.05) on the window + scores",
        "predict": "LoadedModel.predict of the window (booster + calibration)",
    }
    for name, label in labels.items():
        print(f"     {label:<72} {c['median_s'][name] * 1000:9.1f} ms")
    print(f"     ratio check_window / predict: {c['ratio_check_over_predict']:.2f}x")
    print(
        f"   request log: {log['records']:,} 1-row prediction records (features form) written "
        f"by SegmentWriter in {log['write_s']:.1f} s, {log['segments']} segment(s), "
        f"{log['bytes'] / 2**20:.0f} MiB; alternating, median of {log['reps']}:"
    )
    labels = {
        "read_log": "read_log (every segment, every record parsed)",
        "read_traffic": f"read_traffic (empty watermark: {log['records_read_by_read_traffic']:,} "
        "records by stream)",
        "check_model": f"check_model: read_traffic + {log['windows_checked_by_check_model']} "
        "windows checked + live accuracy (no labels)",
    }
    for name, label in labels.items():
        print(
            f"     {label:<72} {log['median_s'][name]:7.2f} s {log['records_per_s'][name]:>10,.0f}"
            " records/s"
        )
    return []


# -- part 3: latency from a drift event to a Running flow run -------------------------------


def api_post(api_url: str, path: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        f"{api_url}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.loads(resp.read())


def received_at(api_url: str, resource_id: str) -> datetime | None:
    """When the server received the event of `resource_id` (its events API)."""
    found = api_post(
        api_url,
        "/events/filter",
        {"filter": {"resource": {"id": [resource_id]}}, "limit": 5},
    )
    events = [e for e in found.get("events", []) if e["event"] == "mlops.model.drift-detected"]
    return datetime.fromisoformat(events[0]["received"]) if events else None


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def start_process(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True
        )


def one_event(client: Any, api_url: str, deployment_id: Any, rng: random.Random, q: float):
    """Emit one drift event for a fresh resource and follow its flow run to Running."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.events import emit_event

    time.sleep(rng.uniform(0, q))  # anywhere in the worker's polling cycle
    resource = f"mlops.model.{MODEL}-{uuid.uuid4().hex[:8]}"
    event = emit_event(
        event="mlops.model.drift-detected",
        resource={"prefect.resource.id": resource},
        payload={"bench": "monitor"},
    )
    if event is None:
        raise RuntimeError("emit_event returned None: events are disabled in this process")
    runs_of = DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))

    def run_of_event():
        for run in client.read_flow_runs(deployment_filter=runs_of):
            if (run.parameters.get("params") or {}).get("resource_id") == resource:
                return run
        return None

    run = wait_for(run_of_event, 120, f"a flow run for {resource}")

    def states():
        found = {s.type.value: s.timestamp for s in client.read_flow_run_states(run.id)}
        return found if "RUNNING" in found else None

    stamps = wait_for(states, 120, f"flow run {run.name} Running")
    wait_for(lambda: client.read_flow_run(run.id).state.is_final(), 120, f"{run.name} to finish")
    received = wait_for(lambda: received_at(api_url, resource), 30, "the event's received time")
    occurred = event.occurred
    created = run.created
    pending, running = stamps["PENDING"], stamps["RUNNING"]
    final = client.read_flow_run(run.id).state
    return {
        "resource": resource,
        "flow_run": str(run.id),
        "final_state": final.type.value,
        "occurred": occurred.isoformat(),
        "received": received.isoformat(),
        "created": created.isoformat(),
        "pending": pending.isoformat(),
        "running": running.isoformat(),
        "emit_to_received": (received - occurred).total_seconds(),
        "received_to_created": (created - received).total_seconds(),
        "created_to_pending": (pending - created).total_seconds(),
        "pending_to_running": (running - pending).total_seconds(),
        "emit_to_running": (running - occurred).total_seconds(),
    }


def latency(args: argparse.Namespace, work: Path, say: Say) -> dict[str, Any]:
    from prefect.client.orchestration import get_client
    from prefect.events import DeploymentEventTrigger
    from prefect.events.worker import EventsWorker
    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

    from flows.local_server import LocalServer, prefect_cli
    from tasks.processes import stop_process_group
    from tasks.serving.local_target import free_port

    default_q = float(get_current_settings().worker.query_seconds)
    home = work / "prefect-home"
    shutil.rmtree(home, ignore_errors=True)
    server = LocalServer(home=home, port=free_port())
    pool = f"bench-monitor-{uuid.uuid4().hex[:6]}"
    rng = random.Random(args.seed)
    results: dict[str, Any] = {"default_query_seconds": default_q, "settings": {}}
    workers: list[int] = []
    EventsWorker.drain_all()  # no events client left pointing at another server
    try:
        began = time.perf_counter()
        server.start(timeout=120)
        results["server_start_s"] = time.perf_counter() - began
        env = {
            **os.environ,
            "PREFECT_API_URL": server.api_url,
            "PREFECT_HOME": str(home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
        env.pop("PREFECT_WORKER_QUERY_SECONDS", None)
        prefect_cli(env, "work-pool", "create", pool, "--type", "process", "--overwrite", cwd=ROOT)
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            trigger = DeploymentEventTrigger(
                name="bench-retrain-on-drift",
                enabled=True,
                match={"prefect.resource.id": "mlops.model.*"},
                expect={"mlops.model.drift-detected"},
                for_each={"prefect.resource.id"},
                posture="Reactive",
                threshold=1,
                within=timedelta(seconds=3600),
                parameters=FROM_EVENT,
            )
            source = triggered.from_source(
                source=str(ROOT), entrypoint="bench/monitor.py:triggered"
            )
            deployment_id = source.deploy(
                name="bench-monitor",
                work_pool_name=pool,
                triggers=[trigger],
                build=False,
                push=False,
                print_next_steps=False,
                ignore_warnings=True,
            )
            with get_client(sync_client=True) as client:
                automations = client.read_automations_by_name("bench-retrain-on-drift")
                results["automation"] = automations[0].trigger.model_dump(mode="json")
                for q in args.query_seconds:
                    q_env = dict(env)
                    if q != default_q:
                        q_env["PREFECT_WORKER_QUERY_SECONDS"] = f"{q:g}"
                    worker = start_process(
                        [sys.executable, "-m", "prefect", "worker", "start", "-p", pool],
                        q_env,
                        work / f"worker-{q:g}.log",
                    )
                    workers.append(worker.pid)
                    wait_for(
                        lambda: (
                            [
                                w
                                for w in client.read_workers_for_work_pool(pool)
                                if w.status == "ONLINE"
                            ]
                            or None
                        ),
                        60,
                        "the worker online",
                    )
                    reps = []
                    for i in range(args.latency_reps):
                        rep = one_event(client, server.api_url, deployment_id, rng, q)
                        reps.append(rep)
                        say(
                            f"  query {q:g} s, event {i + 1}: emit -> Running "
                            f"{rep['emit_to_running']:.2f} s ({rep['final_state']})"
                        )
                    stop_process_group(worker.pid, timeout=10)
                    workers.remove(worker.pid)
                    results["settings"][f"{q:g}"] = {
                        "query_seconds": q,
                        "default": q == default_q,
                        "reps": reps,
                        "median_s": {k: statistics.median(r[k] for r in reps) for k in SEGMENTS},
                    }
            EventsWorker.drain_all()
    finally:
        for pid in reversed(workers):
            stop_process_group(pid, timeout=10)
        server.stop()
    return results


def report_latency(figures: dict[str, Any]) -> list:
    print(
        "\n3. drift event -> flow run Running on a worker: prefect server start (SQLite), "
        "a process pool, this module's `triggered` flow deployed with retrain-on-drift's "
        "trigger (reactive, threshold 1, within 3600 s, for_each prefect.resource.id, match "
        "mlops.model.*), a fresh resource id per event, each after a random wait in [0, query "
        "seconds); seconds between the event's and the flow run's stamps (server API)"
    )
    settings = figures["settings"]
    columns = [f"query {k} s" + (" (default)" if v["default"] else "") for k, v in settings.items()]
    events = len(next(iter(settings.values()))["reps"])
    print(f"     {f'median of {events} events':<62}" + "".join(f"{c:>22}" for c in columns))
    for key, label in SEGMENTS.items():
        cells = "".join(f"{v['median_s'][key]:>22.2f}" for v in settings.values())
        print(f"     {label:<62}{cells}")
    targets = []
    for k, v in settings.items():
        total = v["median_s"]["emit_to_running"]
        poll = v["median_s"]["created_to_pending"]
        auto = v["median_s"]["received_to_created"]
        print(
            f"     query {k} s: the worker's poll wait is {poll:.2f} s of {total:.2f} s "
            f"({poll / total:.0%}); the automation {auto:.2f} s ({auto / total:.0%})"
        )
        targets.append(
            (
                f"emit -> Running median, query {k} s",
                f"{total:.1f} s",
                f"< {LATENCY_TARGET_S:g} s",
                total < LATENCY_TARGET_S,
            )
        )
    return targets


# -- main -----------------------------------------------------------------------------------


def report_targets(targets: list) -> list[dict[str, Any]]:
    print("\ntargets, not asserted:")
    for label, value, target, ok in targets:
        mark = "" if ok is None else ("met" if ok else "MISSED")
        print(f"  {label:<66} {value:>10}  target {target:<20} {mark}")
    return [{"figure": f, "value": v, "target": t, "met": ok} for f, v, t, ok in targets]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--parts", default="power,cost,latency", help="any of the three")
    parser.add_argument("--transactions", type=int, default=None, help="default 1,500,000")
    parser.add_argument("--windows", type=int, default=None, help="per cell; default 100")
    parser.add_argument("--sizes", default="200,1000,5000", help="window sizes, rows")
    parser.add_argument("--cost-rows", type=int, default=10_000)
    parser.add_argument("--cost-reps", type=int, default=None, help="default 7")
    parser.add_argument("--log-records", type=int, default=None, help="default 200,000")
    parser.add_argument("--read-reps", type=int, default=None, help="default 3")
    parser.add_argument("--latency-reps", type=int, default=None, help="default 5")
    parser.add_argument("--query-seconds", default="default,2", help="worker polling settings")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default=None, help="kept (and its data reused) if given")
    add_json_arg(parser, "monitor")
    args = parser.parse_args()
    defaults = {  # --quick, full
        "transactions": (400_000, 1_500_000),
        "windows": (20, 100),
        "cost_reps": (3, 7),
        "log_records": (20_000, 200_000),
        "read_reps": (1, 3),
        "latency_reps": (2, 5),
    }
    for name, (small, full) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, small if args.quick else full)
    args.sizes = [int(s) for s in args.sizes.split(",")]
    parts = set(args.parts.split(","))
    if not parts <= {"power", "cost", "latency"}:
        parser.error("--parts: a comma-separated subset of power,cost,latency")
    from prefect.settings import get_current_settings

    default_q = float(get_current_settings().worker.query_seconds)
    args.query_seconds = [
        default_q if q == "default" else float(q) for q in args.query_seconds.split(",")
    ]
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-monitor-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    log = work / "bench-monitor.log"
    print(f"bench/monitor: {os.cpu_count()} CPUs; flow, Dask and server output goes to {log}")
    started = time.perf_counter()
    figures: dict[str, Any] = {"parts": sorted(parts)}
    targets: list = []
    try:
        if parts & {"power", "cost"}:
            datasets = ["baseline", *(SCENARIOS if "power" in parts else [])]
            print(f"preparing {len(datasets)} dataset(s) of {args.transactions:,} transactions:")
            with output_to(log) as say:
                prep = prepare(args, work, datasets, say)
                undrifted, _, _ = pools(prep)
                if "power" in parts:
                    say(f"  checking {args.windows} windows per scenario and size ...")
                    figures["power"] = power(prep, args)
                if "cost" in parts:
                    say("  timing check_window, predict and the request log ...")
                    figures["cost"] = cost(prep, undrifted, args, work)
            figures["setup_s"] = prep.setup_s
            figures["model"] = {"name": MODEL, "version": prep.version}
            if "power" in parts:
                figures["power"].update(
                    {
                        "definitions": DEFINITIONS,
                        "drift_start": str(prep.drift_start),
                        "refit_identical": prep.refit_identical,
                    }
                )
                targets += report_power(prep, figures["power"], args)
            if "cost" in parts:
                targets += report_cost(figures["cost"])
        if "latency" in parts:
            print("\nmeasuring drift event -> Running (a Prefect server, a worker per setting):")
            with output_to(log) as say:
                figures["latency"] = latency(args, work, say)
            targets += report_latency(figures["latency"])
        figures["targets"] = report_targets(targets)
        figures["wall_s"] = time.perf_counter() - started
        figures["load_average"] = os.getloadavg()
        print(f"wall time {figures['wall_s']:.0f} s (load average {os.getloadavg()[0]:.2f})")
        write_json(args.json, "monitor", args, figures)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
