"""Benchmark: point-in-time training sets and online lookups through Feast.

1. `get_historical_features` for 1M labelled entity rows (the credit-risk feature service:
   3 views, 25 features) against a hand-written `pandas.merge_asof` of the same Parquet
   tables (the lower bound: read, sort, as-of join per view with its TTL), median of 3 each.
2. Online lookups for 1 and 100 random entities (the same draws for every path), p50/p99:
   in process with `OnlineReader` (the serving path) on the SQLite online store
   (tasks/feature_store/online_store.py); Feast's SDK (`FeatureStore.get_online_features`)
   on the same store and on Feast's built-in SQLite store; Feast's feature server
   (`feast serve`) over HTTP on 127.0.0.1, whose added latency over the SDK is reported.
   Also: materialization into the SQLite online store against Feast's built-in one.

    python -m bench.features                     # about 5 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dask
import numpy as np
import pandas as pd
from feast import FeatureStore

from features.credit_risk.generator import generate_demo
from tasks.data.preprocess import build_features, plan_sources
from tasks.feature_store.definitions import view_name
from tasks.feature_store.store import (
    StoreSettings,
    apply_definitions,
    materialize,
    online_reader,
    open_store,
    training_set,
)
from tasks.specs.dataset_spec import DatasetSpec, GenerateOptions
from tasks.specs.datasets import get_dataset

SERVICE = "credit_risk_default_v1"
ROOT = Path(__file__).resolve().parents[1]


def prepare(work: Path, transactions: int) -> tuple[DatasetSpec, Path]:
    spec = get_dataset("credit_risk")
    features = work / "prepared" / "features"
    if not features.exists():
        raw = work / "raw"
        end = date.today() - timedelta(days=1)
        options = GenerateOptions(
            rows=transactions, seed=0, start=end - timedelta(days=540), end=end
        )
        generate_demo(str(raw), options)
        with dask.config.set(scheduler="threads"):
            plan = plan_sources(spec, str(raw))
            build_features(spec, plan, str(work / "prepared"), pd.Timestamp.now(tz="UTC"))
    return spec, features


def entity_rows(features: Path, n: int, seed: int = 0) -> pd.DataFrame:
    """`n` labelled rows: customers with random times inside the data's span."""
    rng = np.random.default_rng(seed)
    labels = pd.read_parquet(features / "labels")
    customers = labels["customer_id"].unique()
    lo, hi = labels["event_timestamp"].min().value, labels["event_timestamp"].max().value
    return pd.DataFrame(
        {
            "customer_id": rng.choice(customers, n),
            "event_timestamp": pd.to_datetime(rng.integers(lo, hi, n), utc=True),
            "label": rng.integers(0, 2, n),
        }
    )


def merge_asof_baseline(spec: DatasetSpec, features: Path, entity_df: pd.DataFrame) -> pd.DataFrame:
    """The hand-written lower bound: one as-of join per feature table, TTL as tolerance."""
    out = entity_df.assign(_row=np.arange(len(entity_df))).sort_values("event_timestamp")
    for table in spec.feature_services[SERVICE]:
        frame = pd.read_parquet(features / table).sort_values("event_timestamp")
        frame = frame.rename(columns={"event_timestamp": "_ts"})
        ttl = pd.Timedelta(days=spec.feature_tables[table].ttl_days)
        out = pd.merge_asof(
            out,
            frame,
            left_on="event_timestamp",
            right_on="_ts",
            by="customer_id",
            tolerance=ttl,
            direction="backward",
        ).drop(columns="_ts")
    return out.sort_values("_row").drop(columns="_row").reset_index(drop=True)


def timed(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def percentiles(samples: list[float]) -> tuple[float, float]:
    ms = np.array(samples) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def latencies(lookup, batches: list[list[dict]]) -> tuple[float, float]:
    samples = []
    for entities in batches:
        start = time.perf_counter()
        lookup(entities)
        samples.append(time.perf_counter() - start)
    return percentiles(samples[20:])


def over_http(port: int, entities: list[dict]) -> bytes:
    body = {
        "feature_service": SERVICE,
        "entities": {"customer_id": [e["customer_id"] for e in entities]},
    }
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/get-online-features",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        return resp.read()


def start_feature_server(repo: Path, data_root: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "MLOPS_DATA_ROOT": str(data_root)}
    feast = str(Path(sys.executable).with_name("feast"))
    proc = subprocess.Popen(
        [feast, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=repo,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise TimeoutError("feast serve did not answer /health")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entities", type=int, default=1_000_000)
    parser.add_argument("--transactions", type=int, default=2_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lookups", type=int, default=500)
    parser.add_argument("--port", type=int, default=6571)
    parser.add_argument("--work", default=None)
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-features-"))
    spec, features = prepare(work, args.transactions)

    # a repository copy whose sources point at this run's data (for `feast serve`)
    repo = work / "project" / "features"
    shutil.rmtree(work / "project", ignore_errors=True)
    shutil.copytree(ROOT / "features", repo, ignore=shutil.ignore_patterns("__pycache__"))
    data_root = work / "roots"
    (data_root / spec.name).mkdir(parents=True, exist_ok=True)
    link = data_root / spec.name / "features"
    if not link.exists():
        link.symlink_to(features)
    settings = StoreSettings(
        repo_path=str(repo),
        registry_path=str(repo.parent / "data" / "feast" / "registry.db"),
        sqlite_path=str(repo.parent / "data" / "feast" / "online_store.db"),
    )
    store = open_store(settings)
    feast_root = work / "feast-sqlite"  # the reference: Feast's built-in SQLite online store
    reference = open_store(
        replace(settings, registry_path=str(feast_root / "registry.db")),
        online={"type": "sqlite", "path": str(feast_root / "online_store.db")},
    )
    now = datetime.now(UTC)
    loads = {}
    for name, target in (("SQLite online store", store), ("Feast's SQLite store", reference)):
        apply_definitions(target, spec, str(link))
        start = time.perf_counter()
        materialize(target, spec, end=now)
        loads[name] = time.perf_counter() - start

    entity_df = entity_rows(features, args.entities)
    base_s, expected = timed(lambda: merge_asof_baseline(spec, features, entity_df), args.repeats)
    feast_s, got = timed(lambda: training_set(store, spec, entity_df, SERVICE), args.repeats)
    columns = [
        f.name
        for v in spec.feature_services[SERVICE]
        for f in store.get_feature_view(view_name(spec, v)).features
    ]
    pd.testing.assert_frame_equal(
        got[columns].reset_index(drop=True), expected[columns], check_dtype=False
    )
    print(
        f"historical features, {len(entity_df):,} labelled rows, {len(columns)} features, "
        f"median of {args.repeats}:"
    )
    print(f"  pandas merge_asof (lower bound): {base_s:6.2f} s")
    print(f"  feast get_historical_features:   {feast_s:6.2f} s")
    print(f"  ratio feast / merge_asof: {feast_s / base_s:.2f}x  (target <= 3x); results identical")

    print("materialize (all views, same rows):")
    for name, seconds in loads.items():
        print(f"  {name:>22}: {seconds:6.2f} s")
    rng = np.random.default_rng(1)
    customers = pd.read_parquet(features / "customer_profile", columns=["customer_id"])
    ids = customers["customer_id"].unique()
    draws = {
        n: [
            [{"customer_id": int(c)} for c in rng.choice(ids, n, replace=False)]
            for _ in range(args.lookups)
        ]
        for n in (1, 100)
    }
    reader = online_reader(store, SERVICE)

    def sdk(target: FeatureStore):
        service = target.get_feature_service(SERVICE)
        return lambda rows: target.get_online_features(features=service, entity_rows=rows).to_dict()

    paths = {
        "OnlineReader": reader.read,
        "Feast SDK": sdk(store),
        "Feast SDK, Feast's SQLite store": sdk(reference),
        "feast serve, HTTP": lambda rows: over_http(args.port, rows),
    }
    server = start_feature_server(repo, data_root, args.port)
    try:
        results = {(name, n): latencies(fn, draws[n]) for n in draws for name, fn in paths.items()}
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"online lookups, random entities ({args.lookups} each, after 20 warm-up), ms:")
    for n in draws:
        print(f"  {n} entit{'y' if n == 1 else 'ies'}:")
        for name in paths:
            p50, p99 = results[(name, n)]
            print(f"    {name:>32}: p50 {p50:6.2f}  p99 {p99:6.2f}")
        added = results[("feast serve, HTTP", n)][0] - results[("Feast SDK", n)][0]
        print(f"    the feature server adds p50 {added:+.2f} ms to the SDK in process")
    print("  targets in process: p99 < 2 ms for 1 entity, < 5 ms for 100")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
