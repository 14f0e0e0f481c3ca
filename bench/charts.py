"""Charts of the benchmarks, drawn from their JSON records (bench/results.py): one PNG per
benchmark, `docs/bench/<name>.png`, with the JSON it was drawn from copied beside it
(`docs/bench/<name>.json`), so the README's charts and numbers trace back to one run.

Each benchmark draws its own when it writes its JSON to the default path; to redraw:

    python -m bench.charts                         # every bench/results/*.json
    python -m bench.charts bench/results/serve.json --out /tmp/charts

Bars are medians; a black whisker spans the fastest and slowest sample and the dots are the
samples, where the record has them. A record of a skipped run (`figures.skipped`, e.g.
bench/gpu_train.py without a GPU) draws nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import StrMethodFormatter

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DOCS = ROOT / "docs" / "bench"
WIDTH = 13.0  # inches; at DPI: 1300 px
DPI = 100
GIB = 1024**3

OURS = "#1f77b4"  # this project's path
BASE = "#8c8c8c"  # the baseline it is compared with
OTHER = ["#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf"]

HEADLINES = {
    "preprocess": "data_prep's transformation: serial (one process) vs the Dask LocalCluster",
    "features": "Feast: point-in-time training sets, materialize and online lookups",
    "train": "trainers: fit_task in a flow vs bare LightGBM; PyTorch on 1 vs 2 processes",
    "gpu_train": "the PyTorch trainer on GPU",
    "serve": "serving: the model server vs a bare Seldon booster; batch scoring vs bare predict",
    "monitor": "drift monitoring: detector power, the cost of a check, event -> flow run",
}


class Skipped(Exception):
    """The record holds nothing to draw."""


# -- drawing helpers ------------------------------------------------------------------------


def _wrap(label: str, width: int) -> str:
    return "\n".join(textwrap.wrap(label.strip(), width, break_long_words=False)) or label


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def bars(
    ax: Axes,
    labels: Sequence[str],
    values: Sequence[float],
    samples: Sequence[Sequence[float]] | None = None,
    colors: Sequence[str] | None = None,
    *,
    horizontal: bool = False,
    unit: str = "",
    log: bool = False,
    notes: Sequence[str] | None = None,
) -> None:
    """Bars of `values` (medians), a whisker from the smallest to the largest sample with
    the samples as dots, each bar labelled with its value (and `notes`)."""
    n = len(labels)
    pos = list(range(n))
    colors = list(colors or [OURS] * n)
    ends = []
    if horizontal:
        ax.barh(pos, values, color=colors, height=0.6, zorder=2)
        ax.set_yticks(pos, labels)
        ax.invert_yaxis()
    else:
        ax.bar(pos, values, color=colors, width=0.6, zorder=2)
        ax.set_xticks(pos, labels)
    for i, value in enumerate(values):
        got = [s for s in (samples[i] if samples else []) if s == s]
        end = max([value, *got])
        if len(got) > 1:
            lo, hi = min(got), max(got)
            if horizontal:
                ax.plot([lo, hi], [i, i], color="black", lw=1.2, zorder=3)
                ax.scatter(got, [i] * len(got), s=14, color="black", zorder=4)
            else:
                ax.plot([i, i], [lo, hi], color="black", lw=1.2, zorder=3)
                ax.scatter([i] * len(got), got, s=14, color="black", zorder=4)
        text = f"{_fmt(value)} {unit}".strip()
        if notes and notes[i]:
            text += f"  {notes[i]}" if horizontal else f"\n{notes[i]}"
        if horizontal:
            ax.annotate(
                text, (end, i), xytext=(5, 0), textcoords="offset points", va="center", fontsize=9
            )
        else:
            ax.annotate(
                text, (i, end), xytext=(0, 4), textcoords="offset points", ha="center", fontsize=9
            )
        ends.append(end)
    top = max(ends) if ends else 1.0
    if log:
        (ax.set_xscale if horizontal else ax.set_yscale)("log")
        low = min(v for v in values if v > 0) if any(v > 0 for v in values) else 1.0
        limits = (low / 2, top * (8 if horizontal else 4))
    else:
        limits = (0, top * (1.45 if horizontal else 1.25))
    (ax.set_xlim if horizontal else ax.set_ylim)(*limits)
    if not log and top >= 1000:  # 12,000 rather than 1.2 and a 1e4 offset
        (ax.xaxis if horizontal else ax.yaxis).set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    ax.grid(axis="x" if horizontal else "y", alpha=0.3, zorder=0)


def percentile_bars(
    ax: Axes,
    labels: Sequence[str],
    series: dict[str, Sequence[tuple[float, float]]],
    colors: Sequence[str],
    unit: str = "ms",
) -> None:
    """Horizontal bars of p50 per label and series (e.g. 1 row, 100 rows), a whisker out to
    p99, both values written beside."""
    n, k = len(labels), len(series)
    height = 0.8 / k
    ends = []
    for j, (name, points) in enumerate(series.items()):
        ys = [i - 0.4 + height * (j + 0.5) for i in range(n)]
        p50s = [p[0] for p in points]
        ax.barh(ys, p50s, height=height * 0.9, color=colors[j], label=f"{name}: p50", zorder=2)
        for y, (p50, p99) in zip(ys, points, strict=True):
            ax.plot([p50, p99], [y, y], color="black", lw=1, zorder=3)
            ax.plot([p99], [y], marker="|", color="black", ms=8, zorder=3)
            ax.annotate(
                f"{_fmt(p50)} / {_fmt(p99)}",
                (max(p50, p99), y),
                xytext=(4, 0),
                textcoords="offset points",
                va="center",
                fontsize=8,
            )
            ends.append(max(p50, p99))
    ax.plot([], [], color="black", marker="|", ms=8, label="whisker to p99")
    ax.set_yticks(range(n), labels)
    ax.invert_yaxis()
    ax.set_xlim(0, max(ends, default=1.0) * 1.25)
    ax.set_xlabel(f"time per call, {unit} (labels: p50 / p99)")
    ax.grid(axis="x", alpha=0.3, zorder=0)
    ax.legend(loc="best", fontsize=9)


def _title(ax: Axes, text: str, fontsize: float = 10, chars: int | None = None) -> None:
    """The panel's title, its lines wrapped to about the panel's width."""
    if chars is None:
        spec = ax.get_subplotspec()
        share = 1.0
        if spec is not None:
            cols = spec.get_gridspec().ncols
            share = len(spec.colspan) / cols
        chars = int(150 * share)
    lines = [_wrap(line, chars) for line in text.split("\n")]
    ax.set_title("\n".join(lines), fontsize=fontsize)


def _per_s(count: float, seconds: Sequence[float]) -> list[float]:
    return [count / s for s in seconds if s]


# -- one figure per benchmark ---------------------------------------------------------------


def _preprocess(fig: Figure, f: dict[str, Any], args: dict[str, Any]) -> None:
    parts = [p for p in ("comparison", "larger_than_memory") if f.get(p)]
    if not parts:
        raise Skipped("neither the comparison nor the larger-than-memory run was measured")
    axes = fig.subplots(1, len(parts), squeeze=False)[0]
    for ax, part in zip(axes, parts, strict=True):
        if part == "comparison":
            c = f["comparison"]
            sides = ["serial", "dask"]
            labels = ["serial\n(synchronous scheduler,\n1 process)", "Dask\n(LocalCluster)"]
            rates = [f"{c['rows_per_s'][s]:,.0f} rows/s" for s in sides]
            bars(
                ax,
                labels,
                [c["median_s"][s] for s in sides],
                [c["seconds"][s] for s in sides],
                [BASE, OURS],
                unit="s",
                notes=rates,
            )
            ax.set_ylabel("seconds per pass (plan_sources + build_features)")
            _title(
                ax,
                f"{c['rows_in']:,} rows in {c['files']} files, median of "
                f"{len(c['seconds']['dask'])} alternating passes\n"
                f"Dask / serial rows/s: {c['ratio_dask_over_serial']:.2f}x (target >= 1.5x)",
                fontsize=10,
            )
        else:
            big = f["larger_than_memory"]
            labels = [
                "data in memory\n(pandas)",
                "workers' total\nmemory limit",
                "peak worker\nRSS",
            ]
            values = [
                big["in_memory_bytes"] / GIB,
                big["workers_limit_bytes"] / GIB,
                big["peak_worker_rss_bytes"] / GIB,
            ]
            bars(ax, labels, values, colors=[BASE, OTHER[0], OURS], unit="GiB")
            ax.set_ylabel("GiB")
            ratio = big["in_memory_bytes"] / big["workers_limit_bytes"]
            _title(
                ax,
                f"larger than memory: {big['rows_in']:,} rows through Dask in "
                f"{big['seconds']:.1f} s\ndata {ratio:.1f}x the workers' limit; peak RSS "
                f"{big['peak_worker_rss_bytes'] / big['workers_limit_bytes']:.2f} of it",
                fontsize=10,
            )


def _features(fig: Figure, f: dict[str, Any], args: dict[str, Any]) -> None:
    grid = fig.add_gridspec(2, 2, width_ratios=[2, 1], height_ratios=[1, 1.1])
    h = f["historical"]
    ax = fig.add_subplot(grid[0, 0])
    names = ["stock", "ours", "hand"]
    labels = [
        "stock Feast\nfile offline store",
        "this project's\nAsOfFileOfflineStore",
        "hand-written\nmerge_asof",
    ]
    values = [h["median_s"][n] for n in names]
    bars(
        ax,
        labels,
        values,
        [h["seconds"][n] for n in names],
        [BASE, OURS, OTHER[0]],
        unit="s",
        log=max(values) > 20 * min(values),
        notes=[f"{h['rows_returned'][n]:,} rows" for n in names],
    )
    ax.set_ylabel("seconds per training set")
    _title(
        ax,
        f"point-in-time training set: {h['entity_rows']:,} entity rows, {h['features']} features, "
        f"median of {len(h['seconds']['ours'])}\nours / stock {h['ratio_ours_over_stock']:.2f}x, "
        f"ours / hand-written {h['ratio_ours_over_hand']:.2f}x (target <= 3x)",
        fontsize=10,
    )
    ax = fig.add_subplot(grid[0, 1])
    loads = f["materialize_s"]
    bars(
        ax,
        [_wrap(n, 14) for n in loads],
        list(loads.values()),
        colors=[OURS, BASE][: len(loads)] + OTHER[: max(0, len(loads) - 2)],
        unit="s",
    )
    ax.set_ylabel("seconds")
    _title(ax, "materialize every view (one run each)", fontsize=10)
    ax = fig.add_subplot(grid[1, :])
    online = f["online"]
    paths = list(online["paths"])
    sizes = sorted({n for p in paths for n in online["paths"][p]}, key=int)
    percentile_bars(
        ax,
        [_wrap(p, 40) for p in paths],
        {
            f"{n} entit{'y' if n == '1' else 'ies'}": [
                (online["paths"][p][n]["p50_ms"], online["paths"][p][n]["p99_ms"]) for p in paths
            ]
            for n in sizes
        },
        [OURS, OTHER[0], OTHER[1]],
    )
    _title(
        ax,
        f"online lookup, random entities: {online['timed_calls']} timed calls per path and size "
        "(targets in process: p99 < 2 ms for 1 entity, < 5 ms for 100)",
        fontsize=10,
    )


def _train(fig: Figure, f: dict[str, Any], args: dict[str, Any]) -> None:
    parts = [p for p in ("lightgbm", "torch") if f.get(p)]
    if not parts:
        raise Skipped("neither trainer comparison was measured")
    axes = fig.subplots(1, len(parts), squeeze=False)[0]
    for ax, part in zip(axes, parts, strict=True):
        if part == "lightgbm":
            g = f["lightgbm"]
            names = ["bare", "task", "flow"]
            labels = [
                "bare\nlgb.train",
                "fit_task call\n(task run)",
                "the whole @flow\n(flow run)",
            ]
            bars(
                ax,
                labels,
                [g["median_s"][n] for n in names],
                [g["seconds"][n] for n in names],
                [BASE, OURS, OTHER[0]],
                unit="s",
            )
            ax.set_ylabel("seconds per fit")
            same = "same model" if g["same_model"] else "MODELS DIFFER"
            _title(
                ax,
                f"LightGBM: {g['training_rows']:,} rows x {g['features']} features, "
                f"{g['rounds']} rounds, median of {len(g['seconds']['bare'])}\n"
                f"fit_task / bare {g['ratio_task_over_bare']:.3f} (target <= 1.05), "
                f"flow / bare {g['ratio_flow_over_bare']:.3f}; {same}",
                fontsize=10,
            )
        else:
            t = f["torch"]
            runs = t["samples_per_s"]
            names = list(runs)
            bars(
                ax,
                [_wrap(n, 12) for n in names],
                [t["median_samples_per_s"][n] for n in names],
                [runs[n] for n in names],
                [BASE, *OTHER][: len(names)] if names[0] == "1 process" else None,
            )
            one = t["median_samples_per_s"].get("1 process")
            if one:
                ax.axhline(2 * one, color="black", ls="--", lw=1)
                ax.annotate(
                    "2 x 1 process (perfect scaling)",
                    (0.99, 2 * one),
                    xycoords=("axes fraction", "data"),
                    xytext=(0, 3),
                    textcoords="offset points",
                    ha="right",
                    fontsize=8,
                )
            ax.set_ylim(0, max(ax.get_ylim()[1], 2.3 * (one or 0)))
            ax.set_ylabel("training samples/s (inside the workers)")
            _title(
                ax,
                f"PyTorch MLP on CPU: {t['rows']:,} rows, batch {t['batch_size']}, "
                f"{t['epochs']} epochs, median of {len(next(iter(runs.values())))}\n"
                f"scaling efficiency {t['scaling_efficiency']:.2f} (target >= 0.8), at a 1 ms "
                f"cycle {t['scaling_efficiency_1ms_cycle']:.2f}; horovod / torch.distributed "
                f"{t['horovod_over_torch_distributed']:.2f}",
                fontsize=10,
            )


def _gpu_train(fig: Figure, f: dict[str, Any], args: dict[str, Any]) -> None:
    runs: dict[str, list[dict[str, float]]] = f["runs"]
    names = list(runs)
    peaks = [max(m["gpu_peak_bytes"] for m in runs[n]) / GIB for n in names]
    axes = fig.subplots(1, 2 if any(peaks) else 1, squeeze=False)[0]
    ax = axes[0]
    bars(
        ax,
        [_wrap(n, 18) for n in names],
        [f["median_samples_per_s"][n] for n in names],
        [[m["samples_per_s"] for m in runs[n]] for n in names],
        [OURS, BASE],
    )
    ax.set_ylabel("training samples/s")
    if "cuda_over_cpu" in f:
        ratio = f"cuda / cpu {f['cuda_over_cpu']:.1f}x"
    else:
        ratio = f"scaling efficiency {f['scaling_efficiency']:.2f}"
    _title(
        ax,
        f"{f['device_name']} x{f['gpus']}: {f['training_rows']:,} rows, batch "
        f"{args.get('batch_size')}, {args.get('epochs')} epochs, median of "
        f"{len(runs[names[0]])}\n{ratio}",
        fontsize=10,
    )
    if len(axes) > 1:
        bars(axes[1], [_wrap(n, 18) for n in names], peaks, colors=[OURS, BASE], unit="GiB")
        axes[1].set_ylabel("peak GPU memory, GiB (rank 0)")
        _title(axes[1], "peak GPU memory", fontsize=10)


WRK_LABELS = {"c_unlogged": "(c) without its request log (_log a no-op)"}


def _serve(fig: Figure, f: dict[str, Any], args: dict[str, Any]) -> None:
    wrk, batch = f.get("wrk"), f.get("batch")
    lower = [p for p in (wrk, batch) if p]
    heights = [6.0, 5.0] if lower else [6.0]
    fig.set_size_inches(WIDTH, 1.0 + sum(heights))
    grid = fig.add_gridspec(len(heights), max(1, len(lower)), height_ratios=heights)
    ax = fig.add_subplot(grid[0, :])
    setups = f["setups"]
    lat = f["latency"]
    names = [n for n in setups if n in lat]
    labels = [_wrap(setups[n], 44) for n in names]
    sizes = sorted({s for n in names for s in lat[n]}, key=int)
    percentile_bars(
        ax,
        labels,
        {
            f"{s} row{'s' if s != '1' else ''}": [
                (lat[n][s]["p50_ms"], lat[n][s]["p99_ms"]) for n in names
            ]
            for s in sizes
        },
        [OURS, OTHER[0]],
    )
    calls = lat[names[0]][sizes[0]].get("n", args.get("requests"))
    ratios = ", ".join(f"{k} row(s) {v:.2f}" for k, v in f["ratio_c_over_b_p50"].items())
    _title(
        ax,
        f"latency of one call, 127.0.0.1: {calls} calls per setup and size; gunicorn "
        f"{args.get('workers')} worker x {args.get('threads')} threads per server\n"
        f"(c) / (b) p50: {ratios} (target <= 1.3); (e) p99 at 1 row "
        f"{f['e_p99_ms_1_row']:.2f} ms (target <= 5 ms)",
        fontsize=10,
    )
    col = 0
    if wrk:
        ax = fig.add_subplot(grid[1, col])
        col += 1
        names = list(wrk)
        colors = [BASE if n == "b" else OTHER[1] if n == "c_unlogged" else OURS for n in names]
        bars(
            ax,
            [_wrap(WRK_LABELS.get(n) or setups.get(n, n), 26) for n in names],
            [wrk[n]["requests_per_s"] for n in names],
            [[r["requests"] / r["seconds"] for r in wrk[n]["rounds"]] for n in names],
            colors,
            horizontal=True,
            notes=[f"p99 {wrk[n]['p99_ms']:.1f} ms" for n in names],
        )
        ax.set_xlabel("requests/s (1-row bodies; dots: each round)")
        kept = f.get("request_log_throughput_ratio")
        lost = f"; the request log costs (c) {1 - kept:.0%} (target < 10%)" if kept else ""
        _title(
            ax,
            f"throughput: wrk -t{args.get('wrk_threads')} -c{args.get('wrk_connections')}, "
            f"{args.get('wrk_rounds')} x {args.get('wrk_seconds')} s\n"
            f"errors {f.get('errors_total', 0)}{lost}",
            chars=60,
        )
    if batch:
        ax = fig.add_subplot(grid[1, col])
        order = ["batch_score", "bare_read_predict", "batch_predict", "bare_predict", "retrieval"]
        names = [n for n in order if n in batch["paths"]]
        colors = [
            BASE if n.startswith("bare") else OTHER[2] if n == "retrieval" else OURS for n in names
        ]
        bars(
            ax,
            [_wrap(batch["paths"][n], 30) for n in names],
            [batch["rows_per_s"][n] for n in names],
            [_per_s(batch["rows"], batch["seconds"][n]) for n in names],
            colors,
            horizontal=True,
            log=True,
        )
        ax.set_xlabel("rows/s, log scale (dots: each pass)")
        _title(
            ax,
            f"batch scoring: {batch['rows']:,} rows x {batch['features']} features, median of "
            f"{len(batch['seconds'][names[0]])}\nrows/s vs bare: end to end "
            f"{batch['ratio_end_to_end']:.3f}, scoring alone {batch['ratio_scoring_alone']:.2f} "
            "(target >= 0.8)",
            chars=45,
        )


SEGMENT_LABELS = {
    "emit_to_received": "emit_event -> received",
    "received_to_created": "received -> flow run created (automation)",
    "created_to_pending": "created -> Pending (worker's poll)",
    "pending_to_running": "Pending -> Running (process start)",
}


def _monitor(fig: Figure, f: dict[str, Any], args: dict[str, Any]) -> None:
    rows: list[tuple[float, list[Callable[[Axes], None]]]] = []
    if f.get("power"):
        rows.append((1.3, [lambda ax: _monitor_power(ax, f["power"])]))
    if f.get("cost"):
        cost = f["cost"]
        check, log = cost["check_vs_predict"], cost["request_log"]
        rows.append((1.0, [lambda ax: _monitor_check(ax, check), lambda ax: _monitor_log(ax, log)]))
    if f.get("latency"):
        rows.append((0.8, [lambda ax: _monitor_latency(ax, f["latency"])]))
    if not rows:
        raise Skipped("no part was measured")
    fig.set_size_inches(WIDTH, 1.2 + sum(4.0 * h for h, _ in rows))
    grid = fig.add_gridspec(len(rows), 2, height_ratios=[h for h, _ in rows])
    for i, (_, fns) in enumerate(rows):
        if len(fns) == 1:
            fns[0](fig.add_subplot(grid[i, :]))
        else:
            for j, fn in enumerate(fns):
                fn(fig.add_subplot(grid[i, j]))


def _monitor_power(ax: Axes, power: dict[str, Any]) -> None:
    rates: dict[str, dict[str, Any]] = power["rates"]
    scenarios = power.get("checks", {}).get("scenarios", {})
    pools = list(rates)
    sizes = sorted({s for p in pools for s in rates[p]}, key=int)
    width = 0.8 / len(sizes)
    for j, size in enumerate(sizes):
        xs, ys, lows, highs = [], [], [], []
        for i, pool in enumerate(pools):
            got = rates[pool].get(size)
            if not got:  # the pool was smaller than a window
                continue
            xs.append(i - 0.4 + width * (j + 0.5))
            ys.append(got["rate"] * 100)
            lows.append(max(0.0, got["rate"] - got["ci95"][0]) * 100)
            highs.append(max(0.0, got["ci95"][1] - got["rate"]) * 100)
        ax.bar(
            xs,
            ys,
            width=width * 0.9,
            color=[OURS, OTHER[0], OTHER[1], *OTHER[2:]][j % 6],
            label=f"windows of {int(size):,} rows",
            zorder=2,
        )
        ax.errorbar(
            xs, ys, yerr=[lows, highs], fmt="none", ecolor="black", capsize=3, lw=1, zorder=3
        )
        for x, y, hi in zip(xs, ys, highs, strict=True):
            ax.annotate(
                f"{y:.0f}",
                (x, y + hi),
                xytext=(0, 2),
                textcoords="offset points",
                ha="center",
                fontsize=7,
            )
    labels = []
    for pool in pools:
        if pool == "undrifted":
            labels.append("undrifted\n(false alarms)")
        elif pool == "concept":
            labels.append("concept drift\n(label rule only:\nno covariate change)")
        else:
            reach = scenarios.get(pool, {}).get("post_drift_rows_with_a_watched_feature_changed")
            extra = f"\n(reach {reach:.0%})" if reach is not None else ""
            labels.append(f"covariate drift:\n{pool}{extra}")
    ax.set_xticks(range(len(pools)), labels, fontsize=9)
    ax.axhline(95, color="black", ls="--", lw=1, label="detection target >= 95%")
    ax.axhline(5, color="black", ls=":", lw=1, label="false-alarm target <= 5%")
    ax.set_xlim(-0.5, len(pools) - 0.5)
    ax.set_ylim(0, 112)
    ax.set_ylabel("windows that alarmed, % (95% Wilson interval)")
    windows = next(v for p in pools for v in rates[p].values() if v)["windows"]
    _title(
        ax,
        f"detector power: {windows} windows per pool and size, check_window at p = 0.05; "
        f"drift from {power.get('drift_start', '?')}; reach: the share of post-drift rows "
        "with a watched feature changed",
        fontsize=10,
    )
    ax.legend(loc="center left", fontsize=8, bbox_to_anchor=(0.0, 0.62))
    ax.grid(axis="y", alpha=0.3, zorder=0)


def _monitor_check(ax: Axes, c: dict[str, Any]) -> None:
    names = ["check_window", "predict"]
    bars(
        ax,
        ["check_window\n(drift check)", "LoadedModel\n.predict"],
        [c["median_s"][n] * 1000 for n in names],
        [[s * 1000 for s in c["seconds"][n]] for n in names],
        [OURS, BASE],
        unit="ms",
    )
    ax.set_ylabel("ms per call")
    _title(
        ax,
        f"cost of a check: the same {c['rows']:,} rows, median of {c['reps']}\n"
        f"check / predict {c['ratio_check_over_predict']:.2f}x",
        fontsize=10,
    )


def _monitor_log(ax: Axes, log: dict[str, Any]) -> None:
    names = list(log["records_per_s"])
    labels = {
        "read_log": "read_log",
        "read_traffic": "read_traffic",
        "check_model": "check_model\n(a whole pass)",
    }
    bars(
        ax,
        [labels.get(n, n) for n in names],
        [log["records_per_s"][n] for n in names],
        [_per_s(log["records"], log["seconds"][n]) for n in names],
        [BASE, OTHER[0], OURS][: len(names)] + OTHER[1 : max(1, len(names) - 2)],
    )
    ax.set_ylabel("request-log records/s")
    _title(
        ax,
        f"reading the request log: {log['records']:,} records, {log['bytes'] / 1e6:,.0f} MB in "
        f"{log['segments']} segments,\nmedian of {log['reps']}; "
        f"{log['windows_checked_by_check_model']} windows checked by check_model",
        fontsize=10,
    )


def _monitor_latency(ax: Axes, lat: dict[str, Any]) -> None:
    settings: dict[str, dict[str, Any]] = lat["settings"]
    names = list(settings)
    left = [0.0] * len(names)
    colors = [BASE, OTHER[0], OURS, OTHER[1]]
    for k, (key, label) in enumerate(SEGMENT_LABELS.items()):
        widths = [settings[n]["median_s"][key] for n in names]
        ax.barh(range(len(names)), widths, left=left, height=0.5, color=colors[k], label=label)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    ends = []
    for i, n in enumerate(names):
        totals = [r["emit_to_running"] for r in settings[n]["reps"]]
        median = settings[n]["median_s"]["emit_to_running"]
        ax.scatter(
            totals,
            [i + 0.36] * len(totals),
            s=18,
            color="black",
            zorder=4,
            label="emit -> Running, each event" if i == 0 else None,
        )
        ax.plot(
            [median],
            [i + 0.36],
            marker="|",
            ms=14,
            mew=2,
            color="black",
            zorder=4,
            label="their median" if i == 0 else None,
        )
        end = max([*totals, left[i]])
        ax.annotate(
            f"median {median:.1f} s",
            (end, i + 0.36),
            xytext=(6, 0),
            textcoords="offset points",
            va="center",
            fontsize=9,
        )
        ends.append(end)
    ax.set_yticks(
        range(len(names)),
        [f"worker query\n{n} s" + (" (default)" if settings[n]["default"] else "") for n in names],
    )
    ax.set_ylim(len(names) - 0.4, -0.5)
    ax.set_xlim(0, max(ends) * 1.15)
    ax.set_xlabel("seconds (bars: each segment's median, stacked; dots: emit -> Running)")
    events = len(settings[names[0]]["reps"])
    _title(
        ax,
        f"drift event -> the triggered flow run Running on a worker: {events} events per "
        "setting (target < 30 s)",
    )
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, fontsize=8)
    ax.grid(axis="x", alpha=0.3, zorder=0)


DRAWERS: dict[str, tuple[Callable[[Figure, dict[str, Any], dict[str, Any]], None], float]] = {
    "preprocess": (_preprocess, 6.0),
    "features": (_features, 10.0),
    "train": (_train, 6.5),
    "gpu_train": (_gpu_train, 6.0),
    "serve": (_serve, 12.0),
    "monitor": (_monitor, 13.0),
}


# -- the entry points -----------------------------------------------------------------------


def draw(record: dict[str, Any], out: Path) -> Path | None:
    """One benchmark's record as a PNG at `out`; None (nothing written) for a skipped run."""
    name = record["benchmark"]
    figures = record.get("figures") or {}
    if "skipped" in figures:
        print(f"{name}: a skipped run ({figures['skipped']}): no chart")
        return None
    if name not in DRAWERS:
        raise ValueError(f"no chart for benchmark {name!r}")
    drawer, height = DRAWERS[name]
    fig = plt.figure(figsize=(WIDTH, height), dpi=DPI, layout="constrained")
    try:
        try:
            drawer(fig, figures, record.get("args") or {})
        except Skipped as why:
            print(f"{name}: {why}: no chart")
            return None
        commit = (record.get("git_commit") or "unknown")[:7]
        machine = record.get("machine") or {}
        load = figures.get("load_average")
        fig.suptitle(
            f"bench/{name}: {HEADLINES.get(name, name)}\n"
            f"commit {commit}, {machine.get('cpus', '?')} CPUs ({machine.get('platform', '?')}), "
            f"measured {record.get('measured_at', '?')}"
            + (f", load average {load[0]:.2f} at the end" if load else ""),
            fontsize=11,
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=DPI)
    finally:
        plt.close(fig)
    return out


def publish(json_path: Path, chart: Path | None = None, docs: Path | None = None) -> Path | None:
    """Draw the record at `json_path`: to `chart` if given, else to `docs/<benchmark>.png`
    (default docs/bench/) with the JSON copied beside it (`docs/<benchmark>.json`)."""
    json_path = Path(json_path)
    record = json.loads(json_path.read_text())
    name = record["benchmark"]
    folder = DOCS if docs is None else Path(docs)
    drawn = draw(record, chart or folder / f"{name}.png")
    if drawn is None:
        return None
    print(f"chart drawn to {drawn}")
    copy = folder / f"{name}.json"
    if chart is None and json_path.resolve() != copy.resolve():
        shutil.copyfile(json_path, copy)
    return drawn


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json", nargs="*", help="records (default: every bench/results/*.json)")
    parser.add_argument("--out", default=str(DOCS), help=f"folder of the charts (default {DOCS})")
    args = parser.parse_args(argv)
    paths = [Path(p) for p in args.json] or sorted(RESULTS.glob("*.json"))
    if not paths:
        parser.error(f"no records given and none in {RESULTS}")
    failed = []
    for path in paths:
        try:
            publish(path, docs=Path(args.out))
        except Exception as exc:  # the other records are still drawn
            print(f"{path}: no chart: {type(exc).__name__}: {exc}")
            failed.append(str(path))
    if failed:
        raise SystemExit(f"no chart drawn for {', '.join(failed)}")


if __name__ == "__main__":
    main()
