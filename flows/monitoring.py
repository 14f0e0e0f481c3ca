"""monitoring: served traffic since the watermark -> drift detectors per served version ->
live accuracy from late labels -> registry records, artifact, pushgateway -> events."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from prefect import flow, get_run_logger
from pydantic import BaseModel, ConfigDict, Field

from blocks import ModelRegistry, MonitoringPolicy, ServingTarget, load_or_default, loop_settings
from tasks.monitoring.episodes import (
    episodes_to_emit,
    load_episodes,
    new_episodes,
    save_episodes,
)
from tasks.monitoring.prefect_tasks import (
    check_traffic,
    emit_episode,
    publish_monitoring,
    push_metrics,
    record_monitoring,
)
from tasks.monitoring.traffic import Watermark, exclusive
from tasks.registry.store import Registry, RegistryError

WATERMARK = "watermark.json"
EPISODES = "episodes.json"
State = Literal["checked", "drift", "degraded", "insufficient data", "no traffic"]


class MonitoringParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_name: str | None = Field(
        default=None, description="Default: every registered model with a request log."
    )
    # blocks: default, the `mlops_loop` variable's (blocks/loop_settings.py), else embedded
    target_block: str | None = Field(default=None, description="Where the request log is.")
    policy_block: str | None = Field(default=None, description="A MonitoringPolicy block.")
    registry_block: str | None = None


class ModelMonitoring(BaseModel):
    model: str
    state: State
    records: int  # new request-log records read
    windows: int
    drifted_windows: int
    insufficient: list[dict[str, int | str]]
    accuracy: list[dict[str, float | int | str | bool]]
    unmatched_labels: int
    skipped: list[str]
    events: list[dict[str, str | int | None]]
    records_written: dict[int, str]


class MonitoringResult(BaseModel):
    models: list[ModelMonitoring]


@flow(name="monitoring", log_prints=True)
def monitoring(params: MonitoringParams = MonitoringParams()) -> MonitoringResult:  # noqa: B008
    """Check each served model's new traffic and labels; emit drift and degradation events."""
    loop = loop_settings()
    params = params.model_copy(
        update={
            "target_block": params.target_block or loop.target_block,
            "policy_block": params.policy_block or loop.monitoring_policy_block,
            "registry_block": params.registry_block or loop.registry_block,
        }
    )
    target = load_or_default(ServingTarget, params.target_block, ServingTarget())
    block = load_or_default(MonitoringPolicy, params.policy_block, MonitoringPolicy())
    registry = load_or_default(ModelRegistry, params.registry_block, ModelRegistry()).registry()
    if params.model_name:
        if not registry.versions(params.model_name):
            raise RegistryError(
                f"monitoring: unknown model '{params.model_name}'; registered: {registry.models()}"
            )
        names = [params.model_name]
    else:
        names = [n for n in registry.models() if target.log_dir(n).is_dir()]
    results, failures = [], {}
    for name in names:  # one model's failure does not keep the others unchecked
        try:
            with exclusive(target.monitoring_dir(name)):
                results.append(_monitor(name, target, block, registry))
        except Exception as exc:
            get_run_logger().error("monitoring of %s failed: %s", name, exc)
            failures[name] = exc
    if len(failures) == 1 and len(names) == 1:
        raise next(iter(failures.values()))
    if failures:
        raise RuntimeError(
            "monitoring failed for "
            + "; ".join(f"{name}: {exc}" for name, exc in failures.items())
            + f" (checked: {[r.model for r in results]})"
        )
    return MonitoringResult(models=results)


def _monitor(
    name: str,
    target: ServingTarget,
    block: MonitoringPolicy,
    registry: Registry,
) -> ModelMonitoring:
    logger = get_run_logger()
    policy = block.policy
    state_dir: Path = target.monitoring_dir(name)
    mark = Watermark.load(state_dir / WATERMARK)
    check, detectors = check_traffic(str(target.log_dir(name)), name, mark, policy, registry)
    records = record_monitoring(registry, check, policy)
    champion = registry.aliases(name).get("champion")
    found = new_episodes(check, records, policy.auc_floor, champion)
    retrained = [v.created_at for v in registry.versions(name) if v.metadata.get("cause")]
    still_open, emit = episodes_to_emit(
        load_episodes(state_dir / EPISODES, name),
        found,
        retrained,
        policy.reemit_after_s,
        champion,
    )
    events: list[dict[str, str | int | None]] = []
    for episode in emit:
        event_id = emit_episode(name, episode)
        again = "again " if episode.emitted > 1 else ""
        why = ", ".join(episode.payload.get("drifted_features", [])) or (
            f"score p={episode.payload['score_p_value']:.3g}"
            if "score_p_value" in episode.payload
            else f"AUC {episode.payload['value']:.4f} < {episode.payload['floor']}"
        )
        logger.warning("%s: %s v%s %s(%s)", episode.event, name, episode.version, again, why)
        events.append(
            {
                "event": episode.event,
                "version": episode.version,
                "id": event_id,
                "why": why,
                "record": episode.record,
                "emitted": episode.emitted,
            }
        )
    # the results are stored and the events out: the next run starts where this one ended
    save_episodes(state_dir / EPISODES, still_open)
    check.mark.save(state_dir / WATERMARK)
    summary = {
        "until": check.until,
        "records": check.records,
        "skipped": check.skipped,
        "checks": [{**c, "record": records.get(c["version"], "-")} for c in check.checks],
        "insufficient": check.insufficient,
        "accuracy": [a.as_dict() for a in check.accuracy],
        "auc_floor": policy.auc_floor,
        "labels": check.labels,
        "unmatched_labels": check.unmatched_labels,
        "events": events,
    }
    try:  # reports: a pushgateway or artifact that fails costs this run's report, not its work
        if block.pushgateway_url:
            push_metrics(block.pushgateway_url, check, policy.auc_floor)
        publish_monitoring(check, detectors, summary)
    except Exception as exc:
        logger.warning("%s: results stored, but not reported: %s", name, exc)
    state: State = "checked"
    if check.drifted():
        state = "drift"
    elif any(a.below_floor for a in check.accuracy):
        state = "degraded"
    elif not check.checks and check.insufficient:
        state = "insufficient data"
    elif not check.checks:
        state = "no traffic"
    logger.info(
        "%s: %s; %s new record(s), %s window(s), %s drifted, %s label(s) (%s unmatched)",
        name,
        state,
        check.records,
        len(check.checks),
        len(check.drifted()),
        check.labels,
        check.unmatched_labels,
    )
    return ModelMonitoring(
        model=name,
        state=state,
        records=check.records,
        windows=len(check.checks),
        drifted_windows=len(check.drifted()),
        insufficient=check.insufficient,
        accuracy=[a.as_dict() for a in check.accuracy],
        unmatched_labels=check.unmatched_labels,
        skipped=check.skipped,
        events=events,
        records_written=records,
    )
