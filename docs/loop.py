"""Draw the closed loop (docs/loop.png) from the flows and events it is made of:
`.venv/bin/python -m docs.loop`."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

OUT = Path(__file__).with_name("loop.png")
# (name, x, y, what it does); flows in the registry (flows/__init__.py) and the served model
BOXES = {
    "data-prep": (1.0, 4.0, "raw -> features\nFeast snapshot"),
    "training": (4.2, 4.0, "LightGBM | PyTorch\n+ detectors"),
    "validation": (7.4, 4.0, "gates vs champion\nexplanations"),
    "deployment": (10.6, 4.0, "canary | shadow\npromote | roll back"),
    "serving": (10.6, 1.6, "Seldon behind nginx\nrequest + labels logs"),
    "monitoring": (7.4, 1.6, "Alibi Detect drift\nlive AUC, Prometheus"),
    "automations": (4.2, 1.6, "prefect.yaml triggers\none per episode"),
    "retraining": (1.0, 1.6, "the loop as subflows\nlineage to the event"),
}
# (from, to, label)
EDGES = [
    ("data-prep", "training", ""),
    ("training", "validation", "candidate"),
    ("validation", "deployment", "challenger"),
    ("deployment", "serving", "champion"),
    ("serving", "monitoring", "traffic, labels"),
    ("monitoring", "automations", "drift-detected\nperformance-degraded"),
    ("automations", "retraining", "run"),
    ("retraining", "data-prep", "new data?"),
]


def draw(path: Path = OUT) -> Path:
    fig, ax = plt.subplots(figsize=(12.5, 5.2), dpi=110)
    ax.set_xlim(-0.3, 11.9)
    ax.set_ylim(0.5, 5.2)
    ax.axis("off")
    for name, (x, y, text) in BOXES.items():
        colour = "#dbe9f6" if y > 3 else "#fde9d2"
        ax.add_patch(
            FancyBboxPatch(
                (x - 1.05, y - 0.55), 2.1, 1.1, boxstyle="round,pad=0.05", fc=colour, ec="#333"
            )
        )
        ax.text(x, y + 0.22, name, ha="center", va="center", fontsize=11, weight="bold")
        ax.text(x, y - 0.2, text, ha="center", va="center", fontsize=8)
    for start, end, label in EDGES:
        (x0, y0, _), (x1, y1, _) = BOXES[start], BOXES[end]
        dx, dy = x1 - x0, y1 - y0
        shrink = (1.12 * ((dx > 0) - (dx < 0)), 0.62 * ((dy > 0) - (dy < 0)))
        a = (x0 + shrink[0], y0 + shrink[1])
        b = (x1 - shrink[0], y1 - shrink[1])
        ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=14, lw=1.4))
        if label and dx == 0:  # a vertical arrow: its label beside it
            ax.text(a[0] + 0.08, (a[1] + b[1]) / 2, label, va="center", fontsize=7.5, color="#444")
        elif label:
            ax.text(
                (a[0] + b[0]) / 2,
                (a[1] + b[1]) / 2 + 0.12,
                label,
                ha="center",
                va="bottom",
                fontsize=7.5,
                color="#444",
            )
    ax.text(
        5.8,
        5.05,
        "drift -> retrain -> gates -> canary -> promote or roll back: every step a "
        "Prefect run, every decision a registry record",
        ha="center",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


if __name__ == "__main__":
    print(draw())
