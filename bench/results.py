"""Where benchmarks write their figures as JSON, for charts: `bench/results/<name>.json` by
default (git-ignored: machine-specific output), or the path given with `--json`.

A run written to the default path also draws its chart (bench/charts.py) to
`docs/bench/<name>.png`, with the JSON copied beside it (`docs/bench/<name>.json`); a run with
another `--json` draws none unless `--chart PATH` names where, so that trial runs leave the
docs' charts alone. The JSON is written first: a chart that fails to draw is reported, and the
JSON stays."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def add_json_arg(parser: argparse.ArgumentParser, name: str) -> None:
    default = RESULTS / f"{name}.json"
    parser.add_argument("--json", default=str(default), help=f"figures as JSON (default {default})")
    parser.add_argument(
        "--chart",
        default=None,
        help=f"draw the chart to this PNG (default: docs/bench/{name}.png, with a copy of the "
        "JSON beside it, and only when --json is the default)",
    )


def _git_commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=RESULTS.parent, capture_output=True, text=True
        )
    except OSError:  # no git on this machine
        return None
    return done.stdout.strip() or None


def write_json(path: str, benchmark: str, args: argparse.Namespace, figures: Any) -> None:
    """The figures with what produced them: arguments, machine, commit, time."""
    record = {
        "benchmark": benchmark,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "args": {k: v for k, v in vars(args).items() if k not in ("json", "chart")},
        "figures": figures,
    }
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"figures written to {out}")
    chart = getattr(args, "chart", None)
    if chart is None and out.resolve() != (RESULTS / f"{benchmark}.json").resolve():
        return  # a trial run: the docs' charts stay as they are
    try:
        from bench.charts import publish

        publish(out, Path(chart) if chart else None)
    except Exception as exc:  # a chart is a by-product: the JSON above stands
        print(f"no chart drawn for {out}: {type(exc).__name__}: {exc}")
