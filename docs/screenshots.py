"""The README's pictures of the Prefect UI: `python -m docs.screenshots` runs `mlops demo`
(skip it with `--no-demo` when one just ran), then photographs its server's pages in headless
Chromium into docs/img/, and keeps the demo's summary in docs/img/demo-summary.txt. The UI
checks in tests/integration/test_loop.py read the same pages through the same functions."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from docs import ui as pages

OUT = Path(__file__).resolve().parent / "img"


def find_artifact(api: str, run: str, key: str) -> str:
    """The id of the run's newest artifact with this key."""
    found = [a for a in pages.run_artifacts(api, run) if a.get("key") == key]
    if not found:
        raise SystemExit(f"no artifact '{key}' in flow run {run}")
    return str(found[-1]["id"])


def main() -> None:
    from blocks import ModelRegistry
    from flows import FLOWS
    from flows.demo import run_demo
    from flows.local_server import default_server
    from tasks.artifacts import artifact_key
    from tasks.monitoring.lineage import read_lineage
    from tasks.specs.datasets import default_model

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-demo", action="store_true", help="photograph the last demo's runs")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.no_demo:
        lines: list[str] = []

        def keep(line: str) -> None:
            print(line)
            lines.append(line)

        summary = run_demo(out=keep)
        (out / "demo-summary.txt").write_text("\n".join(lines) + "\n")
        (out / "demo-summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    api = os.environ.get("PREFECT_API_URL") or default_server().api_url
    ui = api.removesuffix("/api")
    model = default_model()
    registry = ModelRegistry().registry()
    newest = registry.versions(model)[-1].version
    lineage = read_lineage(registry, model, newest)
    if lineage is None:
        raise SystemExit(f"{model} v{newest} has no lineage: run `make demo` first")
    runs = lineage["runs"]
    training = pages.api_json(api, "deployments/name/training/training")
    with pages.browser() as driver:
        pages.open_page(driver, f"{ui}/deployments", list(FLOWS), out / "deployments.png")
        pages.open_page(driver, f"{ui}/automations", ["retrain-on-drift"], out / "automations.png")
        pages.open_page(
            driver,
            f"{ui}/runs/flow-run/{runs['retraining']}",
            ["retraining", "Completed"],
            out / "retraining-run.png",
        )
        evidence = find_artifact(api, runs["validation"], artifact_key("validation", model))
        pages.artifact_page(driver, ui, evidence, ["Gates", "Plots"], out / "validation.png")
        pages.shot_from(driver, "Plots", out / "validation-plots.png")
        if runs.get("deployment"):
            rollout = find_artifact(api, runs["deployment"], artifact_key("rollout", model))
            pages.artifact_page(driver, ui, rollout, [model], out / "rollout.png")
        pages.run_form(driver, ui, training["id"], out / "training-run-form.png")
    for png in sorted(out.glob("*.png")):
        print(png)


if __name__ == "__main__":
    main()
