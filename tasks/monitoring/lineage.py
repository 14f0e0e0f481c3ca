"""A version's lineage: the event that caused it, the runs that made it, its gates and rollout.

`retraining` keeps a `lineage` record beside the version it registered; `mlops models NAME
VERSION --lineage` prints it as a chain, with links to the runs in the Prefect UI.
"""

from __future__ import annotations

import json
from typing import Any

from tasks.registry.store import Registry, RegistryError

RECORD = "lineage"
FILE = "lineage.json"


def model_of(resource_id: str) -> tuple[str, str]:
    """('model' | 'dataset' | 'pipeline', name) of an event resource `mlops.model.<name>`,
    `mlops.dataset.<name>` or `mlops.pipeline.<flow>`."""
    for kind in ("model", "dataset", "pipeline"):
        prefix = f"mlops.{kind}."
        if resource_id.startswith(prefix) and len(resource_id) > len(prefix):
            return kind, resource_id[len(prefix) :]
    raise ValueError(
        f"event resource '{resource_id}' is none of mlops.model.<name>, mlops.dataset.<name>, "
        "mlops.pipeline.<flow>"
    )


def models_for(registry: Registry, resource_id: str) -> list[str]:
    """The models a triggering event is about; fails fast, naming what is unknown."""
    kind, name = model_of(resource_id)
    known = registry.models()
    if kind == "model":
        if name not in known:
            raise RegistryError(f"retraining: unknown model '{name}'; registered: {known}")
        return [name]
    if kind == "pipeline":  # new code: every model in service is made again with it
        return [m for m in known if "champion" in registry.aliases(m)]
    trained = [m for m in known if registry.versions(m)[-1].metadata.get("dataset") == name]
    if not trained:
        raise RegistryError(f"retraining: no registered model is trained on dataset '{name}'")
    return trained


def lineage_lines(lineage: dict[str, Any], ui_url: str | None) -> list[str]:
    def run(kind: str) -> str:
        run_id = lineage["runs"].get(kind)
        if not run_id:
            return f"{kind}: skipped"
        link = f" {ui_url.rstrip('/')}/runs/flow-run/{run_id}" if ui_url else ""
        return f"{kind} run {run_id}{link}"

    cause = lineage.get("cause") or {}
    lines = [
        f"event     {cause.get('event') or 'manual'} {cause.get('event_id') or ''}".rstrip(),
        f"          on {cause.get('resource') or '-'}; {cause.get('why') or ''}".rstrip(),
    ]
    if cause.get("record"):
        lines.append(f"          evidence record {cause['record']}")
    lines.append(f"  -> {run('retraining')}")
    lines.append(f"  -> {run('data-prep')}")
    lines.append(f"  -> {run('training')}")
    lines.append(f"  -> version {lineage['model']} v{lineage['version']}")
    validation = lineage.get("validation") or {}
    failed = ", ".join(validation.get("failed_gates") or []) or "none"
    lines.append(f"  -> {run('validation')}")
    lines.append(f"       gates: {validation.get('decision', '-')} (failed: {failed})")
    deployment = lineage.get("deployment") or {}
    lines.append(f"  -> {run('deployment')}")
    if deployment:
        reasons = "; ".join(deployment.get("reasons") or []) or "-"
        lines.append(
            f"       rollout: {deployment.get('decision')} (champion now "
            f"v{deployment.get('champion')}; {reasons})"
        )
    if lineage.get("error"):
        lines.append(f"  !! the retraining failed here: {lineage['error']}")
    return lines


def read_lineage(registry: Registry, name: str, version: int) -> dict[str, Any] | None:
    stamps = registry.records(name, version, RECORD)
    if not stamps:
        return None
    return dict(json.loads(registry.read_record(name, version, RECORD, stamps[-1], FILE)))
