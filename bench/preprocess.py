"""Benchmark: the data_prep transformation in single-process pandas vs the flow's Dask path.

Both run the same code on the same files: read, validate (pandera), quarantine, build every
feature table with the dataset's transforms, write Parquet. pandas does it table by table in
one process; the Dask path is `plan_sources` + `build_features` on a LocalCluster shaped like
the embedded DaskCluster block (2 worker processes x 1 thread), started once, outside the timing.

Part 2 runs the Dask path on data at least 3x larger (in memory) than the workers' total
memory limit and reports the workers' peak resident memory, sampled every 50 ms.

    python -m bench.preprocess                      # 5M rows, 3 runs each, then the big run
    python -m bench.preprocess --rows 500000 --big-rows 0   # a quick look
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import psutil
from distributed import Client

from blocks.dask_cluster import DaskCluster, local_cluster
from features.credit_risk.generator import generate_demo
from tasks.data.ingest import join_uri
from tasks.data.preprocess import (
    build_features,
    merge_stats,
    partition_stats,
    plan_sources,
)
from tasks.data.publish import LABELS
from tasks.data.raw_checks import build_schema, validate_partition
from tasks.specs.dataset_spec import DatasetSpec, GenerateOptions
from tasks.specs.datasets import get_dataset

NOW = pd.Timestamp.now(tz="UTC")


def pandas_path(spec: DatasetSpec, raw: Path, out: Path) -> int:
    """The same validation and transforms, whole tables in one process."""
    clean: dict[str, pd.DataFrame] = {}
    rows = 0
    for name, table in spec.tables.items():
        frame = pd.read_parquet(raw / table.path)
        rows += len(frame)
        dups = frame.loc[frame.duplicated(table.primary_key, keep=False), table.primary_key]
        result = validate_partition(
            frame, table, build_schema(table, NOW), str(raw / table.path), dups
        )
        clean[name] = result.clean
        if len(result.quarantine):
            (out / "quarantine").mkdir(parents=True, exist_ok=True)
            result.quarantine.to_parquet(out / "quarantine" / f"{name}.parquet", index=False)
    (out / "features").mkdir(parents=True, exist_ok=True)
    outputs: dict[str, pd.DataFrame] = {}
    for name, ft in spec.feature_tables.items():
        outputs[name] = spec.transform_fn(name)(*(clean[t] for t in ft.inputs))
        outputs[name].to_parquet(out / "features" / f"{name}.parquet", index=False)
    label_table = spec.tables[spec.label.table]
    labels = clean[spec.label.table][[*spec.join_keys(), label_table.timestamp, spec.label.column]]
    labels.to_parquet(out / "features" / f"{LABELS}.parquet", index=False)
    for frame in (*outputs.values(), labels):  # the per-feature summary the flow reports
        merge_stats(partition_stats(frame))
    return rows


def dask_path(spec: DatasetSpec, raw: Path, out: Path) -> int:
    report = build_features(spec, plan_sources(spec, str(raw)), join_uri(str(out)), NOW)
    return report.rows_in


def timed(fn, spec: DatasetSpec, raw: Path, work: Path, repeats: int) -> tuple[float, int]:
    times, rows = [], 0
    for _ in range(repeats):
        out = Path(tempfile.mkdtemp(dir=work))
        start = time.perf_counter()
        rows = fn(spec, raw, out)
        times.append(time.perf_counter() - start)
        shutil.rmtree(out)
    return statistics.median(times), rows


def in_memory_bytes(spec: DatasetSpec, raw: Path) -> int:
    """Size of the raw tables as pandas frames: one file per table measured, scaled by bytes."""
    total = 0
    for table in spec.tables.values():
        files = sorted((raw / table.path).glob("*.parquet"))
        sample = pd.read_parquet(files[0]).memory_usage(deep=True).sum()
        on_disk = sum(f.stat().st_size for f in files)
        total += int(sample * on_disk / files[0].stat().st_size)
    return total


class PeakRSS:
    """Peak summed RSS of the cluster's worker processes (nannies and their workers)."""

    def __init__(self, client: Client) -> None:
        self.pids = list(client.run(lambda: __import__("os").getpid()).values())
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        procs = [psutil.Process(p) for p in self.pids]
        while not self._stop.is_set():
            self.peak = max(self.peak, sum(p.memory_info().rss for p in procs if p.is_running()))
            time.sleep(0.05)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--repeats", type=int, default=3, help="0: skip the comparison")
    parser.add_argument("--big-rows", type=int, default=36_000_000)
    parser.add_argument("--worker-memory", default="600MiB")
    parser.add_argument("--work", default=None, help="scratch folder (default: a temp folder)")
    args = parser.parse_args()
    spec = get_dataset("credit_risk")
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-preprocess-"))
    work.mkdir(parents=True, exist_ok=True)

    embedded = DaskCluster()  # the block's embedded default: what data_prep runs on
    if args.repeats:
        raw = work / "raw"
        if not raw.exists():
            generate_demo(
                str(raw),
                GenerateOptions(rows=args.rows, seed=0, chunk_rows=500_000, dirty_rate=0.001),
            )
        with local_cluster(**embedded.local_kwargs()) as cluster, Client(cluster):
            dask_s, rows = timed(dask_path, spec, raw, work, args.repeats)
        pandas_s, pandas_rows = timed(pandas_path, spec, raw, work, args.repeats)
        assert rows == pandas_rows, (rows, pandas_rows)
        print(
            f"rows in: {rows:,} (transactions {args.rows:,} + customers + applications), "
            f"median of {args.repeats} runs each"
        )
        print(f"pandas (1 process): {pandas_s:7.2f} s  {rows / pandas_s:12,.0f} rows/s")
        print(f"dask (2 workers):   {dask_s:7.2f} s  {rows / dask_s:12,.0f} rows/s")
        print(f"ratio dask/pandas rows/s: {pandas_s / dask_s:.2f}x  (target >= 1.5x)")

    if args.big_rows:
        big = work / "big"
        if not big.exists():
            generate_demo(
                str(big),
                GenerateOptions(rows=args.big_rows, seed=1, chunk_rows=100_000, dirty_rate=0.001),
            )
        small = embedded.model_copy(update={"memory_limit": args.worker_memory})
        with local_cluster(**small.local_kwargs()) as cluster, Client(cluster) as client:
            limit = sum(w["memory_limit"] for w in client.scheduler_info()["workers"].values())
            data = in_memory_bytes(spec, big)
            out = Path(tempfile.mkdtemp(dir=work))
            with PeakRSS(client) as peak:
                start = time.perf_counter()
                big_rows = dask_path(spec, big, out)
                elapsed = time.perf_counter() - start
        gib = 1024**3
        print(
            f"larger than memory: {big_rows:,} rows, {data / gib:.2f} GiB in memory = "
            f"{data / limit:.1f}x the workers' total limit {limit / gib:.2f} GiB"
        )
        print(
            f"  completed in {elapsed:.1f} s; peak worker RSS {peak.peak / gib:.2f} GiB "
            f"({peak.peak / limit:.2f} of the limit)"
        )
    shutil.rmtree(work, ignore_errors=True) if args.work is None else None


if __name__ == "__main__":
    main()
