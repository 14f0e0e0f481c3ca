"""Prefect tasks of the monitoring stage: detectors, the check, records, events, metrics."""

from __future__ import annotations

import json
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from tasks.artifacts import artifact_key
from tasks.monitoring.check import ModelCheck, check_model
from tasks.monitoring.detectors import Detectors
from tasks.monitoring.episodes import Episode, record_id
from tasks.monitoring.metrics import push
from tasks.monitoring.policy import MonitoringPolicy
from tasks.monitoring.report import MAX_PLOTS, drift_plot, monitoring_markdown
from tasks.monitoring.traffic import Watermark
from tasks.monitoring.versions import version_detectors
from tasks.registry.store import Registry


@task(name="load-detectors", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5)
def load_detectors_task(registry: Registry, name: str, version: int) -> Detectors:
    detectors = version_detectors(registry, name, version)
    get_run_logger().info(
        "v%s detectors: %s, watching %s", version, detectors.origin, detectors.features
    )
    return detectors


@task(name="check-traffic", cache_policy=NO_CACHE)
def check_traffic(
    log_dir: str, name: str, mark: Watermark, policy: MonitoringPolicy, registry: Registry
) -> tuple[ModelCheck, dict[int, Detectors]]:
    """The check, and the detectors it loaded (by version)."""
    loaded: dict[int, Detectors] = {}

    def detectors_for(version: int) -> Detectors:
        if version not in loaded:
            loaded[version] = load_detectors_task(registry, name, version)
        return loaded[version]

    check = check_model(log_dir, name, mark, policy, detectors_for)
    check.skipped = sorted(set(check.skipped))
    for line in check.skipped:
        get_run_logger().warning("request log: skipped %s", line)
    return check, loaded


@task(name="record-monitoring", cache_policy=NO_CACHE)
def record_monitoring(
    registry: Registry, check: ModelCheck, policy: MonitoringPolicy
) -> dict[int, str]:
    """One `monitoring` record per version with new windows or labels; version -> record id."""
    versions = sorted({c["version"] for c in check.checks} | {a.version for a in check.accuracy})
    out = {}
    for version in versions:
        body = {
            "model": check.model,
            "version": version,
            "until": check.until,
            "policy": policy.model_dump(),
            "windows": [c for c in check.checks if c["version"] == version],
            "accuracy": [a.as_dict() for a in check.accuracy if a.version == version],
            "skipped": check.skipped,
        }
        made = registry.record(
            check.model, version, "monitoring", {"monitoring.json": json.dumps(body).encode()}
        )
        out[version] = record_id(check.model, version, "monitoring", made)
    return out


def emit_episode(name: str, episode: Episode) -> str | None:
    """Emit the episode's event; its id (None when events are off)."""
    payload = {**episode.payload, "detected_at": episode.detected_at, "emitted": episode.emitted}
    event = emit_event(
        event=episode.event,
        resource={"prefect.resource.id": f"mlops.model.{name}", "prefect.resource.name": name},
        related=[
            {
                "prefect.resource.id": f"mlops.model.{name}.version.{episode.version}",
                "prefect.resource.role": "model-version",
            },
            {
                "prefect.resource.id": f"mlops.record.{episode.record}",
                "prefect.resource.role": "record",
            },
        ],
        payload=payload,
    )
    if event is None:
        return None
    episode.event_ids = [*episode.event_ids, str(event.id)]
    return str(event.id)


@task(name="push-metrics", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def push_metrics(url: str, check: ModelCheck, auc_floor: float) -> None:
    push(url, check, auc_floor)


@task(name="publish-monitoring", cache_policy=NO_CACHE)
def publish_monitoring(
    check: ModelCheck, detectors: dict[int, Detectors], summary: dict[str, Any]
) -> None:
    plots: dict[str, str] = {}
    for c in reversed(check.drifted()):
        key = (c["version"], c["role"])
        det = detectors.get(c["version"])
        if det is None or key not in check.served:
            continue
        for f in c["features"]:
            label = f"v{c['version']} {c['role']} {f['feature']}"
            if f["drifted"] and label not in plots and len(plots) < MAX_PLOTS:
                i = det.features.index(f["feature"])
                plots[label] = drift_plot(
                    f["feature"], det.x_ref[:, i], check.served[key][:, i], f["p_value"]
                )
    create_markdown_artifact(
        key=artifact_key("monitoring", check.model),
        markdown=monitoring_markdown(check.model, summary, plots),
        description=f"Monitoring of {check.model}: {len(check.checks)} window(s), "
        f"{len(check.drifted())} drifted",
    )
