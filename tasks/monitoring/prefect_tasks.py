"""Prefect tasks of the monitoring stage: detectors, the check, records, events, metrics."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from tasks.artifacts import artifact_key
from tasks.monitoring.check import ModelCheck, check_model
from tasks.monitoring.detectors import Detectors
from tasks.monitoring.episodes import Episode, answered, due
from tasks.monitoring.metrics import push
from tasks.monitoring.policy import MonitoringPolicy
from tasks.monitoring.report import MAX_PLOTS, drift_plot, monitoring_markdown
from tasks.monitoring.traffic import Watermark, stamp
from tasks.monitoring.versions import version_detectors
from tasks.registry.store import Registry

DRIFT = "mlops.model.drift-detected"
DEGRADED = "mlops.model.performance-degraded"


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


def record_id(name: str, version: int, kind: str, stamp_: str) -> str:
    return f"{name}.{version}.{kind}.{stamp_}"


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


def new_episodes(
    check: ModelCheck, records: dict[int, str], auc_floor: float, champion: int | None
) -> list[Episode]:
    """This run's findings about the champion's main traffic, the one a retraining can fix:
    its newest window drifted, its live accuracy below the floor. (A canary's or shadow's are
    the rollout's to judge; a replaced version's late labels are history.) Every window is in
    the records either way."""
    now = stamp(datetime.now(UTC))
    found = []
    windows = [c for c in check.checks if c["version"] == champion and c["role"] == "main"]
    if windows and windows[-1]["drift"]:
        c = windows[-1]
        payload = {
            "model": check.model,
            "version": c["version"],
            "role": c["role"],
            "window": {"first": c["first"], "last": c["last"], "rows": c["rows"]},
            "drifted_features": c["drifted_features"],
            "p_values": {f["feature"]: f["p_value"] for f in c["features"]},
            "distances": {f["feature"]: f["distance"] for f in c["features"]},
            "score_p_value": c["score"]["p_value"],
            "record": records[c["version"]],
        }
        found.append(Episode(DRIFT, c["version"], records[c["version"]], payload, now, now))
    for a in check.accuracy:
        if a.below_floor and a.version == champion and a.role == "main":
            payload = {
                "model": check.model,
                "version": a.version,
                "role": a.role,
                "metric": "auc",
                "value": a.auc,
                "floor": auc_floor,
                "labelled_rows": a.labelled,
                "brier": a.brier,
                "ece": a.ece,
                "record": records[a.version],
            }
            found.append(Episode(DEGRADED, a.version, records[a.version], payload, now, now))
    return found


def episodes_to_emit(
    open_episodes: list[Episode],
    found: list[Episode],
    retrained_at: list[datetime],
    reemit_after_s: float,
    champion: int | None = None,
) -> tuple[list[Episode], list[Episode]]:
    """(episodes still open after this run, those to emit now).

    One open episode per event: a new finding is emitted and replaces the open one (keeping
    when it was first detected); an open one that no retraining has answered, whose version
    still serves, is emitted again once `reemit_after_s` has passed since its last emission.
    """
    now = datetime.now(UTC)
    still = {
        e.event: e
        for e in open_episodes
        if not answered(e, retrained_at) and (champion is None or e.version == champion)
    }
    emit = []
    for episode in found:
        before = still.get(episode.event)
        if before is not None:
            episode.detected_at = before.detected_at
            episode.emitted = before.emitted + 1
            episode.event_ids = before.event_ids
        still[episode.event] = episode
        emit.append(episode)
    fresh = {id(e) for e in emit}
    for episode in still.values():
        if id(episode) not in fresh and due(episode, now, reemit_after_s):
            episode.emitted += 1
            episode.emitted_at = stamp(now)
            emit.append(episode)
    return list(still.values()), emit


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
