"""Benchmark: point-in-time training sets and online lookups through Feast.

1. Point-in-time training set for the same labelled entity rows (the credit-risk feature
   service: 3 views, 25 features), three paths, alternating, median of N each:
   - stock Feast: `FeatureStore.get_historical_features(...).to_df()` with Feast 0.49's own
     file offline store (`offline_store: {type: file}`, i.e. feast's DaskOfflineStore);
   - this project's store: the same call with `AsOfFileOfflineStore`
     (tasks/feature_store/offline_store.py: the file store with a `pandas.merge_asof` join);
   - hand-written: `pyarrow` reads + `pandas.merge_asof` per view with the TTL as tolerance,
     reading only rows that can join, as our store's `_read_source` does (stamped in
     [min entity time - TTL, max entity time], of the entity frame's keys).
   The results are aligned by an entity-row id and compared on the rows both return; the
   rows each path returns are reported (stock Feast drops entity rows whose key has only
   expired values in a view, and keeps one row per key and timestamp).
2. Online lookups for 1 and 100 random entities (the same draws for every path), p50/p99 of
   the call: in process with `OnlineReader.read` (the serving path) on the SQLite online store
   (tasks/feature_store/online_store.py); Feast's SDK `get_online_features(...).to_dict()` on
   the same store and on Feast's built-in SQLite store; Feast's feature server (`feast serve`):
   an HTTP POST to /get-online-features on 127.0.0.1 and its response bytes read (not
   parsed), whose added latency over the SDK is reported; and on Feast's Redis online store
   (a redis-server on 127.0.0.1 started here) `RedisOnlineReader.read` (the serving path,
   deployments/redis_reader.py) beside Feast's SDK. Also: `materialize` of every view (whole
   TTL windows) into the SQLite online store, Feast's built-in one and the Redis one.

    python -m bench.features                     # 1M entity rows, 2M transactions
    python -m bench.features --entities 2000 --transactions 20000 --repeats 1 --lookups 40
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
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from feast import FeatureStore
from feast.repo_config import RepoConfig

from bench.results import RESULTS, add_json_arg, write_json
from features.credit_risk.generator import generate_demo
from tasks.data.preprocess import build_features, plan_sources
from tasks.feature_store.definitions import view_name
from tasks.feature_store.local_redis import LocalRedis
from tasks.feature_store.online_store import STORE_TYPE as ONLINE_STORE_TYPE
from tasks.feature_store.store import (
    StoreSettings,
    apply_definitions,
    labelled_set,
    materialize,
    online_reader,
    open_store,
    stored_features,
    stored_refs,
    training_set,
)
from tasks.progress import progress
from tasks.specs.dataset_spec import DatasetSpec, GenerateOptions
from tasks.specs.datasets import get_dataset

SERVICE = "credit_risk_default_v1"
ROOT = Path(__file__).resolve().parents[1]
ROW_ID = "row_id"  # an entity-row id carried through every path, to align their results
KEY = "customer_id"
PATHS = {
    "stock": "stock Feast 0.49 file offline store (type: file, DaskOfflineStore)",
    "ours": "this project's AsOfFileOfflineStore (merge_asof join)",
    "hand": "hand-written pyarrow read + pandas.merge_asof, same time/key filtering",
}


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


def entity_rows(spec: DatasetSpec, features: Path, n: int, seed: int = 0) -> pd.DataFrame:
    """`n` labelled rows as a training set asks for them: label rows drawn with replacement,
    each at its application time plus a random offset under a day, at microseconds; and a row
    id. (The stored views only: the on-demand view is the same function on every path.)"""
    rng = np.random.default_rng(seed)
    labels = pd.read_parquet(features / "labels").sample(n, replace=True, random_state=seed)
    labels = labels.reset_index(drop=True)
    offset = pd.Series(pd.to_timedelta(rng.integers(0, 86_400_000_000, n), unit="us"))
    return pd.DataFrame(
        {
            KEY: labels[KEY],
            "event_timestamp": (labels["event_timestamp"] + offset).dt.floor("us"),
            "label": labels[spec.label.column],
            ROW_ID: np.arange(n),
        }
    )


def stock_file_store(settings: StoreSettings) -> FeatureStore:
    """The same repository and registry with Feast's own file offline store (`type: file`)."""
    config = RepoConfig(
        project=settings.project,
        provider="local",
        registry=str(Path(settings.registry_path).resolve()),
        online_store={"type": ONLINE_STORE_TYPE, "path": str(Path(settings.sqlite_path).resolve())},
        offline_store={"type": "file"},
        entity_key_serialization_version=3,
        repo_path=Path(settings.repo_path).resolve(),
    )
    return FeatureStore(config=config)


def hand_merge_asof(
    spec: DatasetSpec, features: Path, views: dict[str, list[str]], entity_df: pd.DataFrame
) -> pd.DataFrame:
    """One `pandas.merge_asof` per view (TTL as tolerance), reading only the rows that can join:
    stamped in [min entity time - TTL, max entity time] (pushed down to Parquet) and of the
    entity frame's keys (filtered in Arrow), sorted in Arrow; the entity frame's row order."""
    ts = spec.timestamp_field
    out = entity_df.assign(_row=np.arange(len(entity_df))).sort_values(ts, kind="stable")
    first, last = out[ts].min(), out[ts].max()
    keys = pa.array(out[KEY].unique())
    for table, columns in views.items():
        ttl = pd.Timedelta(days=spec.feature_tables[table].ttl_days)
        # Arrow compares at microseconds: round the bounds outwards so no row is lost
        bounds = [(ts, ">=", (first - ttl).floor("us")), (ts, "<=", last.ceil("us"))]
        rows = pq.read_table(features / table, columns=[KEY, ts, *columns], filters=bounds)
        rows = rows.filter(pc.is_in(rows[KEY], value_set=keys.cast(rows.schema.field(KEY).type)))
        frame = rows.sort_by(ts).to_pandas().rename(columns={ts: "_ts"})
        frame["_ts"] = frame["_ts"].astype(out[ts].dtype)  # merge_asof: same unit on both sides
        out = pd.merge_asof(
            out,
            frame,
            left_on=ts,
            right_on="_ts",
            by=KEY,
            tolerance=ttl,
            direction="backward",
        ).drop(columns="_ts")
    return out.sort_values("_row").drop(columns="_row").reset_index(drop=True)


def timed_alternating(
    fns: dict[str, Callable[[], pd.DataFrame]], repeats: int
) -> tuple[dict[str, list[float]], dict[str, pd.DataFrame]]:
    """Each repeat runs every path once, in order; the seconds of each and its last result."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    results: dict[str, pd.DataFrame] = {}
    with progress("retrieval paths, alternating", repeats * len(fns)) as bar:
        for _ in range(repeats):
            for name, fn in fns.items():
                start = time.perf_counter()
                results[name] = fn()
                times[name].append(time.perf_counter() - start)
                bar.advance()
    return times, results


def compare(
    reference: pd.DataFrame, other: pd.DataFrame, views: dict[str, list[str]]
) -> dict[str, Any]:
    """Rows of `other` against `reference` (aligned by row id): returned, distinct, missing,
    extra, and the rows both return whose feature values differ; of the missing rows, how
    many have no value in at least one view in `reference` (the expired-key rows stock Feast
    drops)."""
    columns = [c for cs in views.values() for c in cs]
    ref, got = reference.set_index(ROW_ID), other.set_index(ROW_ID)
    distinct = int(got.index.nunique())
    got = got[~got.index.duplicated()]  # duplicates are counted in "rows", compared once
    common = ref.index.intersection(got.index)
    a, b = ref.loc[common, columns], got.loc[common, columns]
    equal = (a == b) | (a.isna() & b.isna())
    differing = ~equal.all(axis=1)
    missing = ref.index.difference(got.index)
    unmatched = pd.concat(
        [ref.loc[missing, cs].isna().all(axis=1) for cs in views.values()], axis=1
    )
    return {
        "rows": len(other),
        "distinct_row_ids": distinct,
        "common_rows": len(common),
        "missing_rows": len(missing),
        "missing_with_a_view_unmatched": int(unmatched.any(axis=1).sum()),
        "extra_rows": len(got.index.difference(ref.index)),
        "differing_rows": int(differing.sum()),
        "differing_by_column": {c: int((~equal[c]).sum()) for c in columns if (~equal[c]).any()},
    }


def left_join_rows(features: Path, views: dict[str, list[str]], entity_df: pd.DataFrame) -> int:
    """Rows of stock Feast's largest per-view left join: entity rows x source rows of their key."""
    per_key = entity_df[KEY].value_counts()
    largest = 0
    for table in views:
        counts = pd.read_parquet(features / table, columns=[KEY])[KEY].value_counts()
        joined = per_key.mul(counts.reindex(per_key.index).fillna(1).clip(lower=1)).sum()
        largest = max(largest, int(joined))
    return largest


def historical(
    spec: DatasetSpec,
    features: Path,
    settings: StoreSettings,
    store: FeatureStore,
    entities: int,
    repeats: int,
) -> tuple[dict[str, Any], bool]:
    entity_df = entity_rows(spec, features, entities)
    views = {
        table: [f.name for f in store.get_feature_view(view_name(spec, table)).features]
        for table in spec.service_tables(SERVICE)
    }
    stock = stock_file_store(settings)
    fns: dict[str, Callable[[], pd.DataFrame]] = {
        "stock": lambda: training_set(stock, spec, entity_df, SERVICE, stored_only=True),
        "ours": lambda: training_set(store, spec, entity_df, SERVICE, stored_only=True),
        "hand": lambda: hand_merge_asof(spec, features, views, entity_df),
    }
    times, results = timed_alternating(fns, repeats)
    med = {name: statistics.median(values) for name, values in times.items()}
    checks = {name: compare(results["ours"], results[name], views) for name in ("stock", "hand")}
    n_features = sum(len(cs) for cs in views.values())
    print(
        f"historical features, the same {len(entity_df):,} labelled entity rows, "
        f"{n_features} features from {len(views)} views, paths alternating, median of {repeats}:"
    )
    for name, label in PATHS.items():
        print(f"  {label:<75} {med[name]:7.2f} s  {len(results[name]):>10,} rows")
    print(f"  ratio ours / stock Feast: {med['ours'] / med['stock']:.2f}x")
    print(f"  ratio ours / hand-written: {med['ours'] / med['hand']:.2f}x  (target <= 3x)")
    joined = left_join_rows(features, views, entity_df)
    print(
        f"  stock Feast's largest per-view left join: {joined:,} rows "
        "(entity rows x source rows of their key)"
    )
    identical = True
    for name, check in checks.items():
        print(
            f"  {name} vs ours, aligned by {ROW_ID}: {check['common_rows']:,} rows in both, "
            f"{check['missing_rows']:,} only in ours ({check['missing_with_a_view_unmatched']:,} "
            f"of them with no value in TTL for a view), {check['extra_rows']:,} only in {name}; "
            f"values differ on {check['differing_rows']:,} of the rows in both"
            + (f" {check['differing_by_column']}" if check["differing_rows"] else "")
        )
        # stock Feast's missing rows are reported above; the hand-written join must return all
        complete = name == "stock" or check["missing_rows"] == 0
        unique = check["distinct_row_ids"] == check["rows"]
        identical &= complete and unique and check["differing_rows"] == 0
        identical &= check["extra_rows"] == 0
    figures = {
        "entity_rows": len(entity_df),
        "features": n_features,
        "paths": PATHS,
        "seconds": times,
        "median_s": med,
        "rows_returned": {name: len(frame) for name, frame in results.items()},
        "stock_largest_left_join_rows": joined,
        "ratio_ours_over_stock": med["ours"] / med["stock"],
        "ratio_ours_over_hand": med["ours"] / med["hand"],
        "checks_against_ours": checks,
    }
    return figures, identical


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


def over_http(port: int, refs: list[str], entities: list[dict]) -> bytes:
    body = {
        "features": refs,
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


def online(
    spec: DatasetSpec,
    features: Path,
    store: FeatureStore,
    reference: FeatureStore,
    redis_store: FeatureStore,
    repo: Path,
    data_root: Path,
    lookups: int,
    port: int,
) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    customers = pd.read_parquet(features / "customer_profile", columns=[KEY])
    ids = customers[KEY].unique()
    draws = {
        n: [[{KEY: int(c)} for c in rng.choice(ids, n, replace=False)] for _ in range(lookups)]
        for n in (1, 100)
    }
    reader, redis_reader = online_reader(store, SERVICE), online_reader(redis_store, SERVICE)

    refs = stored_refs(stored_features(store, SERVICE))

    def sdk(target: FeatureStore) -> Callable[[list[dict]], Any]:
        return lambda rows: target.get_online_features(features=refs, entity_rows=rows).to_dict()

    paths = {
        "OnlineReader.read, SQLite online store": reader.read,
        "Feast SDK get_online_features().to_dict()": sdk(store),
        "the same, Feast's built-in SQLite store": sdk(reference),
        "feast serve: HTTP POST, response read": lambda rows: over_http(port, refs, rows),
        "RedisOnlineReader.read, Feast's Redis store": redis_reader.read,
        "Feast SDK, the same Redis store": sdk(redis_store),
    }
    server = start_feature_server(repo, data_root, port)
    try:
        results = {}
        with progress("online lookups", len(draws) * len(paths)) as bar:
            for n in draws:
                for name, fn in paths.items():
                    results[name, n] = latencies(fn, draws[n])
                    bar.advance()
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(
        f"online lookups, random entities, time of one call ({lookups - 20} timed after 20 "
        "warm-up, the same draws for every path), ms:"
    )
    figures: dict[str, Any] = {"timed_calls": lookups - 20, "paths": {}}
    for n in draws:
        print(f"  {n} entit{'y' if n == 1 else 'ies'}:")
        for name in paths:
            p50, p99 = results[(name, n)]
            print(f"    {name:>42}: p50 {p50:6.2f}  p99 {p99:6.2f}")
            figures["paths"].setdefault(name, {})[n] = {"p50_ms": p50, "p99_ms": p99}
        sdk_name, http_name = list(paths)[1], list(paths)[3]
        added = results[(http_name, n)][0] - results[(sdk_name, n)][0]
        print(f"    the feature server adds p50 {added:+.2f} ms to the SDK in process")
    print("  targets in process (the readers): p99 < 2 ms for 1 entity, < 5 ms for 100")
    return figures


def growth_child(work: Path, rows: int, memory_mb: float) -> None:
    """In a fresh process: the training flow's labelled set (`labelled_set`: the service's
    stored views point in time, and its on-demand features) for `rows` labelled rows drawn
    from the prepared labels; prints seconds, peak RSS and the result's size as JSON."""

    spec = get_dataset("credit_risk")
    features = work / "prepared" / "features"
    store = open_store(
        StoreSettings(
            repo_path=str(work / "project" / "features"),
            registry_path=str(work / "growth-registry.db"),
            sqlite_path=str(work / "growth-online.db"),
            retrieval_memory_mb=memory_mb,
            spill_dir=str(work),
        )
    )
    apply_definitions(store, spec, str(features))
    rng = np.random.default_rng(0)
    labels = pd.read_parquet(features / "labels").sample(rows, replace=True, random_state=0)
    offset = pd.to_timedelta(rng.integers(0, 86_400_000_000, rows), unit="us")
    labels["event_timestamp"] = (labels["event_timestamp"] + offset).dt.floor("us")
    labels = labels.reset_index(drop=True)
    before = _high_water_gib()
    start = time.perf_counter()
    frame = labelled_set(store, spec, labels, SERVICE)
    seconds = time.perf_counter() - start
    peak = _high_water_gib()
    result_gib = frame.memory_usage(deep=True).sum() / 2**30
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_rss_gib": peak,
                "rss_before_gib": before,
                "result_gib": result_gib,
                "rows": len(frame),
                "columns": frame.shape[1],
            }
        )
    )


def _high_water_gib() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited from the
    parent it was forked from)."""
    status = Path("/proc/self/status").read_text()
    return (
        int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))
        / 2**20
    )


def growth(work: Path, sizes: list[int], budgets: dict[str, float]) -> dict[str, Any]:
    """`growth_child` per size and budget, each in its own process, budgets alternating."""
    table: dict[str, Any] = {}
    with progress("retrieval growth", len(sizes) * len(budgets)) as bar:
        for rows in sizes:
            for name, memory_mb in budgets.items():
                done = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "bench.features",
                        "--growth-child",
                        str(rows),
                        "--work",
                        str(work),
                        "--memory-mb",
                        str(memory_mb),
                    ],
                    capture_output=True,
                    text=True,
                    cwd=ROOT,
                )
                if done.returncode != 0:
                    raise RuntimeError(f"growth run {rows} {name}: {done.stderr[-3000:]}")
                table.setdefault(name, {})[rows] = json.loads(done.stdout.strip().splitlines()[-1])
                bar.advance()
    print(
        "labelled set for training (labelled_set: 2 stored views point in time + on-demand "
        "features), one fresh process per run, peak RSS of the whole process:"
    )
    print(f"  {'labelled rows':>13}  " + "  ".join(f"{n:>38}" for n in budgets))
    for rows in sizes:
        cells = [
            f"{table[n][rows]['seconds']:7.1f} s  {table[n][rows]['peak_rss_gib']:5.2f} GiB peak"
            f" ({table[n][rows]['result_gib']:.2f} out)"
            for n in budgets
        ]
        print(f"  {rows:>13,}  " + "  ".join(f"{c:>38}" for c in cells))
    first = sizes[0]
    for name in budgets:
        per_row = [table[name][r]["seconds"] / r * first for r in sizes]
        print(f"  {name}: seconds per {first:,} rows: " + ", ".join(f"{x:.1f}" for x in per_row))
    print("  target: 5M labelled rows within 6 GiB peak, time no worse than linear in rows")
    return {"sizes": sizes, "budgets_mb": budgets, "runs": table}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entities", type=int, default=200_000)
    parser.add_argument("--transactions", type=int, default=2_000_000)
    parser.add_argument("--repeats", type=int, default=3, help="0: no point-in-time comparison")
    parser.add_argument("--lookups", type=int, default=500, help="per path and size, 20 warm-up")
    parser.add_argument("--port", type=int, default=6571)
    parser.add_argument("--work", default=None)
    parser.add_argument(
        "--growth",
        default=None,
        help="only the growth table of labelled_set, for these labelled-row counts "
        "(e.g. 500000,1000000,2000000,5000000)",
    )
    parser.add_argument("--growth-child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--memory-mb", type=float, default=2048, help=argparse.SUPPRESS)
    add_json_arg(parser, "features")
    args = parser.parse_args()
    if args.growth_child:
        growth_child(Path(args.work), args.growth_child, args.memory_mb)
        return
    if args.lookups <= 20:
        parser.error("--lookups must be above the 20 warm-up calls")
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
    redis_server = LocalRedis(work / "redis.log").start()
    redis_store = open_store(
        replace(
            settings,
            registry_path=str(work / "feast-redis" / "registry.db"),
            online_store="redis",
            redis_connection_string=redis_server.connection_string,
        )
    )
    now = datetime.now(UTC)
    loads = {}
    for name, target in (
        ("SQLite online store", store),
        ("Feast's SQLite store", reference),
        ("Feast's Redis store", redis_store),
    ):
        apply_definitions(target, spec, str(link))
        start = time.perf_counter()
        materialize(target, spec, end=now)
        loads[name] = time.perf_counter() - start

    if args.growth:
        sizes = [int(n) for n in args.growth.split(",")]
        budgets = {
            "2 GiB budget (the default)": 2048.0,
            "256 MiB budget": 256.0,
            "one pass (no budget)": 1e9,
        }
        figures = growth(work, sizes, budgets)
        redis_server.stop()
        default = str(RESULTS / "features.json")
        out = str(RESULTS / "features-growth.json") if args.json == default else args.json
        write_json(out, "features-growth", args, figures)
        return
    offline, identical = None, True
    if args.repeats:
        offline, identical = historical(
            spec, features, settings, store, args.entities, args.repeats
        )
    print("materialize (every view, its whole TTL window, same rows), one run each:")
    for name, seconds in loads.items():
        print(f"  {name:>22}: {seconds:6.2f} s")
    try:
        lookups = online(
            spec, features, store, reference, redis_store, repo, data_root, args.lookups, args.port
        )
    finally:
        redis_server.stop()
    figures = {"historical": offline, "materialize_s": loads, "online": lookups}
    write_json(args.json, "features", args, figures)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    if not identical:
        sys.exit("the paths' feature values differ on rows they both return (see above)")


if __name__ == "__main__":
    main()
