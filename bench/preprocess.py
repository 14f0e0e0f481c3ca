"""Benchmark: the data_prep transformation run serially in one process vs on the Dask cluster.

Both sides run the same code on the same files: `plan_sources` + `build_features` (tasks/data/
preprocess.py): per file, read and validate (pandera) and write its quarantine; per partition,
the feature tables' transforms, the Parquet writes and `partition_stats`; `merge_stats` per
table. One graph, two schedulers:
- serial: Dask's synchronous scheduler, every task one after another in this process (no
  workers, nothing pickled or sent);
- Dask: the LocalCluster of the embedded DaskCluster block (2 worker processes x 1 thread),
  started once, outside the timing.
The passes alternate (serial, Dask, serial, Dask, ...), each writing to a fresh folder; median
of N each, and the two sides' per-feature summaries are checked equal.

Part 2 runs the Dask path on data at least 3x larger (in memory) than the workers' total
memory limit and reports the workers' peak resident memory, sampled every 50 ms.

    python -m bench.preprocess                      # 5M rows, 3 passes each, then the big run
    python -m bench.preprocess --rows 500000 --big-rows 0   # a quick look
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask
import pandas as pd
import psutil
from distributed import Client

from bench.results import add_json_arg, write_json
from blocks.dask_cluster import DaskCluster, local_cluster
from features.credit_risk.generator import generate_demo
from tasks.data.ingest import join_uri
from tasks.data.preprocess import PrepReport, build_features, plan_sources
from tasks.progress import progress
from tasks.specs.dataset_spec import DatasetSpec, GenerateOptions
from tasks.specs.datasets import get_dataset

NOW = pd.Timestamp.now(tz="UTC")


def run_pipeline(spec: DatasetSpec, raw: Path, out: Path) -> PrepReport:
    return build_features(spec, plan_sources(spec, str(raw)), join_uri(str(out)), NOW)


def serial(spec: DatasetSpec, raw: Path, out: Path) -> PrepReport:
    """The same graph, one task at a time in this process."""
    # with a distributed Client as default, a shuffle would pick p2p, which needs the workers
    config = {"scheduler": "synchronous", "dataframe.shuffle.method": "tasks"}
    with dask.config.set(config):
        return run_pipeline(spec, raw, out)


def alternating(
    spec: DatasetSpec, raw: Path, work: Path, repeats: int
) -> tuple[dict[str, list[float]], dict[str, PrepReport]]:
    """serial, Dask, serial, Dask, ...: the seconds of each pass and each side's last report."""
    sides: dict[str, Callable[[DatasetSpec, Path, Path], PrepReport]] = {
        "serial": serial,
        "dask": run_pipeline,
    }
    times: dict[str, list[float]] = {name: [] for name in sides}
    reports: dict[str, PrepReport] = {}
    with progress("preprocessing passes, alternating", repeats * len(sides)) as bar:
        for _ in range(repeats):
            for name, fn in sides.items():
                out = Path(tempfile.mkdtemp(dir=work))
                start = time.perf_counter()
                reports[name] = fn(spec, raw, out)
                times[name].append(time.perf_counter() - start)
                shutil.rmtree(out)
                bar.advance()
    return times, reports


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
    parser.add_argument("--chunk-rows", dest="chunk_rows", type=int, default=500_000)
    parser.add_argument(
        "--big-chunk-rows",
        dest="big_chunk_rows",
        type=int,
        default=50_000,
        help="transactions per file of the larger-than-memory run: a partition must fit a worker",
    )
    parser.add_argument("--worker-memory", default="1GiB")
    parser.add_argument("--work", default=None, help="scratch folder (default: a temp folder)")
    add_json_arg(parser, "preprocess")
    args = parser.parse_args()
    spec = get_dataset("credit_risk")
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-preprocess-"))
    work.mkdir(parents=True, exist_ok=True)

    embedded = DaskCluster()  # the block's embedded default: what data_prep runs on
    figures: dict[str, Any] = {}
    if args.repeats:
        raw = work / "raw"
        if not raw.exists():
            options = GenerateOptions(
                rows=args.rows, seed=0, chunk_rows=args.chunk_rows, dirty_rate=0.001
            )
            generate_demo(str(raw), options)
        with local_cluster(**embedded.local_kwargs()) as cluster, Client(cluster):
            times, reports = alternating(spec, raw, work, args.repeats)
        rows = reports["dask"].rows_in
        assert reports["serial"].rows_in == rows, (reports["serial"].rows_in, rows)
        for name, summary in reports["dask"].features.items():
            pd.testing.assert_frame_equal(reports["serial"].features[name], summary)
        serial_s, dask_s = statistics.median(times["serial"]), statistics.median(times["dask"])
        files = sum(len(list((raw / t.path).glob("*.parquet"))) for t in spec.tables.values())
        print(
            f"rows in: {rows:,} (transactions {args.rows:,} + customers + applications) in "
            f"{files} files, passes alternating, median of {args.repeats} each; "
            "per-feature summaries equal"
        )
        labels = {
            "serial": "serial: Dask's synchronous scheduler, 1 process",
            "dask": f"Dask: LocalCluster, {embedded.n_workers} workers x "
            f"{embedded.threads_per_worker} thread",
        }
        for name, seconds in (("serial", serial_s), ("dask", dask_s)):
            print(f"{labels[name]:<50} {seconds:7.2f} s  {rows / seconds:12,.0f} rows/s")
        print(f"ratio Dask / serial rows/s: {serial_s / dask_s:.2f}x  (target >= 1.5x)")
        figures["comparison"] = {
            "rows_in": rows,
            "files": files,
            "seconds": times,
            "median_s": {"serial": serial_s, "dask": dask_s},
            "rows_per_s": {"serial": rows / serial_s, "dask": rows / dask_s},
            "ratio_dask_over_serial": serial_s / dask_s,
        }

    if args.big_rows:
        big = work / "big"
        if not big.exists():
            generate_demo(
                str(big),
                GenerateOptions(
                    rows=args.big_rows, seed=1, chunk_rows=args.big_chunk_rows, dirty_rate=0.001
                ),
            )
        small = embedded.model_copy(update={"memory_limit": args.worker_memory})
        with local_cluster(**small.local_kwargs()) as cluster, Client(cluster) as client:
            limit = sum(w["memory_limit"] for w in client.scheduler_info()["workers"].values())
            data = in_memory_bytes(spec, big)
            out = Path(tempfile.mkdtemp(dir=work))
            with PeakRSS(client) as peak:
                start = time.perf_counter()
                big_rows = run_pipeline(spec, big, out).rows_in
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
        figures["larger_than_memory"] = {
            "rows_in": big_rows,
            "in_memory_bytes": data,
            "workers_limit_bytes": limit,
            "seconds": elapsed,
            "peak_worker_rss_bytes": peak.peak,
        }
    write_json(args.json, "preprocess", args, figures)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
