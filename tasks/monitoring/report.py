"""The monitoring run's markdown: checks, live accuracy, and reference-vs-served plots of the
drifted features embedded as data:image/png;base64 URIs (the Prefect UI renders those)."""

from __future__ import annotations

import base64
import io
from typing import Any

import matplotlib
import numpy as np

from tasks.artifacts import markdown_table
from tasks.monitoring.detectors import MISSING

matplotlib.use("Agg")  # no display on workers
import matplotlib.pyplot as plt

MAX_PLOTS = 6


def drift_plot(feature: str, reference: np.ndarray, served: np.ndarray, p_value: float) -> str:
    """Reference vs served histograms of one feature, as a data URI."""
    ref, got = reference[reference != MISSING], served[served != MISSING]
    both = np.concatenate([ref, got]) if len(ref) + len(got) else np.zeros(1)
    lo, hi = np.nanpercentile(both, [0.5, 99.5])
    bins = np.linspace(lo, hi if hi > lo else lo + 1, 40)
    fig, ax = plt.subplots(figsize=(5.2, 2.8), dpi=90)
    ax.hist(np.clip(ref, lo, hi), bins=bins, density=True, alpha=0.55, label="reference")
    ax.hist(np.clip(got, lo, hi), bins=bins, density=True, alpha=0.55, label="served")
    ax.set_title(f"{feature}: KS p = {p_value:.2g}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def monitoring_markdown(model: str, summary: dict[str, Any], plots: dict[str, str]) -> str:
    lines = [f"# Monitoring of {model}", ""]
    lines += [
        f"Request log read until {summary['until']}: {summary['records']} new record(s); "
        f"skipped lines: {len(summary['skipped'])}.",
        "",
    ]
    for line in summary["skipped"][:10]:
        lines.append(f"- skipped: {line}")
    rows = []
    for check in summary["checks"]:
        rows.append(
            {
                "version": check["version"],
                "role": check["role"],
                "window": f"{check['first']} .. {check['last']}",
                "rows": check["rows"],
                "drift": "yes" if check["drift"] else "no",
                "drifted features": ", ".join(check["drifted_features"]) or "-",
                "score KS p": f"{check['score']['p_value']:.3g}",
                "record": check.get("record", "-"),
            }
        )
    lines += ["", "## Drift checks", "", *markdown_table(rows)]
    if summary["insufficient"]:
        lines += ["", "Insufficient data (left for the next run):"]
        lines += [
            f"- v{s['version']} {s['role']}: {s['rows']} row(s)" for s in summary["insufficient"]
        ]
    features = [
        {
            "version": c["version"],
            "role": c["role"],
            "feature": f["feature"],
            "p-value": f"{f['p_value']:.3g}",
            "distance": f"{f['distance']:.4f}",
            "drifted": "yes" if f["drifted"] else "",
        }
        for c in summary["checks"][-4:]
        for f in c["features"]
    ]
    lines += ["", "## Per feature (last windows)", "", *markdown_table(features)]
    accuracy = [
        {
            "version": a["version"],
            "role": a["role"],
            "labelled": a["labelled"],
            "AUC": f"{a['auc']:.4f}",
            "Brier": f"{a['brier']:.4f}",
            "ECE": f"{a['ece']:.4f}",
            "below floor": "yes" if a["below_floor"] else ("" if a["enough"] else "too few"),
        }
        for a in summary["accuracy"]
    ]
    lines += [
        "",
        f"## Live accuracy (floor AUC {summary['auc_floor']}; labels: {summary['labels']}, "
        f"unmatched: {summary['unmatched_labels']})",
        "",
        *markdown_table(accuracy),
    ]
    if summary["events"]:
        lines += ["", "## Events", ""]
        lines += [f"- {e['event']} v{e['version']}: {e['why']}" for e in summary["events"]]
    if plots:
        lines += ["", "## Reference vs served (drifted features)", ""]
        lines += [f"![{name}]({uri})" for name, uri in plots.items()]
    return "\n".join(lines) + "\n"
