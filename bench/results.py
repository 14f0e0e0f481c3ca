"""Where benchmarks write their figures as JSON, for charts: `bench/results/<name>.json` by
default (git-ignored: machine-specific output), or the path given with `--json`."""

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
        "args": {k: v for k, v in vars(args).items() if k != "json"},
        "figures": figures,
    }
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"figures written to {out}")
